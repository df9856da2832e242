"""The API server: HTTP (app, routing, discovery, tables, watching), store, watch, validation, admission."""
