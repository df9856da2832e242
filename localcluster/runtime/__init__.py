"""Container runtimes behind one small interface (`base.Runtime`); `process` runs local processes."""
from localcluster.runtime.base import (Container, ContainerSpec, CreateContainerError, ExitStatus,
                                       Mount, Runtime)

__all__ = ["Container", "ContainerSpec", "CreateContainerError", "ExitStatus", "Mount", "Runtime"]
