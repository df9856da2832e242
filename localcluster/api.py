"""The Kubernetes REST API of the local cluster (aiohttp); see localcluster.apiserver."""
from localcluster.apiserver.app import ApiSettings, make_app, status_response

__all__ = ["ApiSettings", "make_app", "status_response"]
