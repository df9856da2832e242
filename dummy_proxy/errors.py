"""The proxy's exception tree."""


class ProxyError(Exception):
    """Base class of the proxy's own errors."""


class ConfigError(ProxyError):
    """Unusable configuration."""


class BodyTooLarge(ProxyError):
    """The request body passed the configured limit while streaming."""
