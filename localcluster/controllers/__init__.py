"""All controllers of the local cluster, run in the API server's event loop.

`run_controllers` starts the scheduler, the Job, TTL, Deployment and ResourceQuota controllers
and the kubelet (with the process runtime, or the one ``kubelet_config.runtime`` names) and runs
until cancelled; on cancel every pod process gets SIGTERM, then SIGKILL. When the registry marks
images ``fake``, the process runtime hands their pods to the fake runtime
(`localcluster.runtime.fake.ProcessOrFakeRuntime`).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from localcluster.controllers.deployments import DeploymentController
from localcluster.controllers.jobs import JobController, JobControllerConfig
from localcluster.controllers.quota import QuotaController
from localcluster.controllers.scheduler import Scheduler
from localcluster.kubelet.kubelet import Kubelet, KubeletConfig
from localcluster.runtime.registry import DEFAULT_IMAGES_FILE, Registry
from localcluster.runtime.fake import FakeRuntime, ProcessOrFakeRuntime
from localcluster.runtime.process import ProcessRuntime

log = logging.getLogger(__name__)


async def run_controllers(store, state_dir: Path, image_files: list[Path],
                          kubelet_config: KubeletConfig | None = None,
                          job_config: JobControllerConfig | None = None) -> None:
    """image_files: extra registry files, on top of localcluster/images.yaml."""
    registry = Registry.load([DEFAULT_IMAGES_FILE, *image_files])
    runtime = ProcessRuntime(Path(state_dir))
    if registry.has_fakes() and (kubelet_config is None or kubelet_config.runtime is None):
        runtime = ProcessOrFakeRuntime(runtime, FakeRuntime())
    kubelet = Kubelet(store, Path(state_dir), registry, runtime, kubelet_config)
    jobs = JobController(store, job_config)
    scheduler = Scheduler(store)
    kubelet.start()  # registers its Node first, so the scheduler sees it from the start
    scheduler.start()
    jobs_task = asyncio.ensure_future(jobs.run())
    deployments_task = asyncio.ensure_future(DeploymentController(store).run())
    quota_task = asyncio.ensure_future(QuotaController(store).run())
    log.info("controllers running (images: %s)", ", ".join(registry.names()))
    try:
        await asyncio.Future()  # until cancelled
    finally:
        for task in (jobs_task, deployments_task, quota_task):
            task.cancel()
        await asyncio.gather(jobs_task, deployments_task, quota_task, return_exceptions=True)
        await scheduler.close()
        await kubelet.close()
