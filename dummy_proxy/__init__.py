"""The only address algorithm pods may reach: a small reverse proxy to the server's ``/api``.

Forwards ``/api/...`` (normalised, no traversal) to one upstream fixed by configuration; refuses
CONNECT, absolute- and authority-form targets and every other path. Bodies are streamed both ways
with a size limit and timeouts. Upstream redirects are passed back unchanged, never followed. The
proxy does not check tokens (the server does); it forwards only a short list of request headers.
"""
