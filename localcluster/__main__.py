"""Command line: ``python -m localcluster serve --state-dir DIR [--port 0] [--images FILE ...]
[--history N] [--pod-network host|isolated|auto] [--pod-cidr CIDR] [--egress-allow HOST:PORT ...]
[--runtime process|docker|fake] [--cpu N] [--memory Q] [--pods N] [--gpus N]``,
``python -m localcluster cleanup-network`` (removes what killed clusters left of their pod
networks) and ``python -m localcluster demo ...`` (see localcluster.stack).

The pod network (`localcluster.network.netns`) is ``host`` unless asked: the API stand-in alone keeps
its plain behaviour; the demo and integration stack (`localcluster.stack`) ask for ``auto``
(isolated when root with ``ip`` and ``nft``). ``DIR/network.json`` describes the network
(``mode``, and when isolated ``gateway``, ``subnet``, ``egress``); it is written before the
kubeconfig.

The container runtime is ``process`` (pods as local processes, the default) or ``docker`` (pods as
Docker containers from locally built images, `localcluster.runtime.docker`, with the pod network
of `localcluster.network.docker_net`; ``--pod-network`` does not apply then) or ``fake`` (every
container completes without a process, as its pod's annotations say, on a loopback pod IP:
`localcluster.runtime.fake`; for scale tests). ``--runtime`` defaults to the environment variable
``LOCALCLUSTER_RUNTIME``, else ``process``.

``--cpu``, ``--memory``, ``--pods``, ``--ephemeral-storage`` and ``--gpus`` set the Node's capacity
and allocatable (what the scheduler fits pods into); ``nvidia.com/gpu`` is offered only with
``--gpus`` > 0, as a real node has it only with the device plugin.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.network.netns import (DEFAULT_CIDR, MODES, NetworkError, NetworkSettings,
                                cleanup_leftovers, open_network, parse_egress)
from localcluster.apiserver.tls import TlsError

log = logging.getLogger("localcluster")
RUNTIMES = ("process", "docker", "fake")


@dataclass(frozen=True)
class ServeSettings:
    state_dir: Path
    port: int = 0
    images: list[Path] = field(default_factory=list)
    history: int = 5000
    host: str = "127.0.0.1"
    bookmark_interval: float = 60.0
    network: NetworkSettings = field(default_factory=NetworkSettings)
    runtime: str = "process"  # process | docker | fake
    insecure_http: bool = False  # debugging only: kubectl refuses tokens over plain http
    host_root: Path | None = None  # the node's filesystem for hostPath volumes (None: /)
    job_api_backoff: float = 1.0  # first delay before the Job controller retries a refused pod
    # the Node's allocatable (None: KubeletConfig's default)
    allocatable: dict[str, str] | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m localcluster",
                                description="A local Kubernetes API stand-in.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the Kubernetes API and run the controllers")
    s.add_argument("--state-dir", type=Path, required=True)
    s.add_argument("--port", type=int, default=0, help="0 picks a free port")
    s.add_argument("--images", type=Path, action="append", default=[],
                   help="extra image registry YAML (repeatable)")
    s.add_argument("--history", type=int, default=5000,
                   help="watch events kept for resuming (older resourceVersions get 410)")
    s.add_argument("--bookmark-interval", type=float, default=60.0,
                   help="seconds between BOOKMARK events on watches that allow them")
    s.add_argument("--pod-network", choices=MODES, default="host",
                   help="host: pods share the host's network; isolated: one network namespace "
                        "per pod whose only way out is --egress-allow (needs root, ip, nft); "
                        "auto: isolated when possible, else host with a warning")
    s.add_argument("--pod-cidr", default=DEFAULT_CIDR,
                   help="isolated mode: the cluster takes a free /22 of it")
    s.add_argument("--egress-allow", action="append", default=[], metavar="HOST:PORT",
                   help="isolated mode: where pods may connect (repeatable); HOST is an IPv4 "
                        "address of this host or 'gateway' (the host's address in the pod "
                        "network, where e.g. the proxy listens)")
    s.add_argument("--insecure-http", action="store_true",
                   help="serve plain HTTP instead of HTTPS (debugging only: kubectl and "
                        "client-go send no token over plain http)")
    s.add_argument("--runtime", choices=RUNTIMES,
                   default=os.environ.get("LOCALCLUSTER_RUNTIME") or "process",
                   help="process: pods run as local processes; docker: as Docker containers "
                        "of locally built images, isolated by Docker networks per their "
                        "NetworkPolicies (needs a Docker engine); fake: containers complete "
                        "without a process as their pods' annotations say (scale tests; "
                        "env LOCALCLUSTER_RUNTIME)")
    s.add_argument("--host-root", type=Path, default=None, metavar="DIR",
                   help="hostPath volumes: /x is DIR/x, the filesystem of the cluster node "
                        "(as in a k3d node container); default: this machine's paths")
    s.add_argument("--job-api-backoff", type=float, default=1.0, metavar="SECONDS",
                   help="first delay before the Job controller retries a pod the API refused "
                        "(doubling up to 60s, as a real cluster; tests make it short)")
    node = s.add_argument_group("the node's resources (capacity = allocatable)")
    node.add_argument("--cpu", type=_quantity, default="64", help="cpus (default 64)")
    node.add_argument("--memory", type=_quantity, default="256Gi", help="memory (default 256Gi)")
    node.add_argument("--pods", type=_count, default=250, help="pods (default 250)")
    node.add_argument("--ephemeral-storage", type=_quantity, default="1Ti",
                      help="ephemeral-storage (default 1Ti)")
    node.add_argument("--gpus", type=_count, default=0,
                      help="nvidia.com/gpu (default 0: the node has none)")
    s.add_argument("--log-level", default="INFO")
    sub.add_parser("cleanup-network",
                   help="remove pod networks left by local clusters that were killed")
    sub.add_parser("demo", help="run the whole demo stack", add_help=False)
    return p


def _quantity(text: str) -> str:
    from localcluster.kubelet.spec import parse_quantity
    try:
        if parse_quantity(text) < 0:
            raise ValueError(f"negative quantity {text!r}")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return text


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def node_allocatable(cpu: str, memory: str, pods: int, storage: str, gpus: int) -> dict[str, str]:
    out = {"cpu": cpu, "memory": memory, "pods": str(pods), "ephemeral-storage": storage}
    if gpus > 0:
        out["nvidia.com/gpu"] = str(gpus)
    return out


async def _serve(settings: ServeSettings) -> int:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    kc_path = settings.state_dir / "kubeconfig"
    kc_path.unlink(missing_ok=True)  # a stale file would look like a ready cluster
    if settings.runtime == "docker":
        network = _open_docker()
    else:
        cleanup_leftovers(settings.network.run_dir)
        network = open_network(settings.network)
    try:
        _write_json(settings.state_dir / "network.json", network.describe())
        return await _serve_with(settings, kc_path, network)
    finally:
        network.close()


def _open_docker():
    from localcluster.runtime.docker_client import docker_unavailable
    from localcluster.network.docker_firewall import cleanup_host_guards
    from localcluster.network.docker_net import DockerNetwork
    from localcluster.runtime.docker import cleanup_leftovers as cleanup_docker

    why = docker_unavailable()
    if why:
        raise NetworkError(f"--runtime docker is not possible: {why}")
    cleanup_docker()
    cleanup_host_guards()
    return DockerNetwork(secrets.token_hex(3))


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


async def _serve_with(settings: ServeSettings, kc_path: Path, network) -> int:
    from aiohttp import web

    from localcluster import kubeconfig
    from localcluster.apiserver import tls as cluster_tls
    from localcluster.apiserver import rbac_bootstrap
    from localcluster.apiserver.app import ApiSettings, make_app
    from localcluster.apiserver.store import Store
    from localcluster.kubelet import logs as kubelet_logs

    store = Store(history=settings.history)
    rbac_bootstrap.seed(store)  # the default ClusterRoles and bindings, as a real server makes
    api = ApiSettings(token=secrets.token_urlsafe(32), state_dir=settings.state_dir,
                      bookmark_interval=settings.bookmark_interval, pod_logs=kubelet_logs)
    runner = web.AppRunner(make_app(store, api), shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    tls = None
    if not settings.insecure_http:  # a new CA per cluster; pods on a pod network use its gateway
        gateway = network.describe().get("gateway")
        tls = cluster_tls.create(settings.state_dir, (gateway,) if gateway else ())
    site = web.TCPSite(runner, settings.host, settings.port,
                       ssl_context=tls.server_context() if tls else None)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    api.server_address = f"{settings.host}:{port}"

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    access = None
    if tls is not None:  # in-cluster clients send their token, so only over https
        from localcluster.apiserver.incluster import InClusterAccess, RootCaPublisher
        pod_host = network.describe().get("gateway") or settings.host
        if pod_host != settings.host:  # pods on the pod network reach the API at its gateway
            await web.TCPSite(runner, pod_host, port, ssl_context=tls.server_context()).start()
        access = InClusterAccess(store, port, pod_host)
        api.authenticate = access.authenticate
        api.request_token = access.request_token
        RootCaPublisher(store, tls.ca_pem).start()
    controllers = _start_controllers(store, settings, network, access)
    exit_code = 0
    if controllers is not None:
        controllers.add_done_callback(lambda t: stop.set())
    server = f"{'https' if tls else 'http'}://{settings.host}:{port}"
    kubeconfig.write(kc_path, server, api.token, ca_pem=tls.ca_pem if tls else None)
    log.info("serving the Kubernetes API on %s (state in %s)", server, settings.state_dir)
    _tune_gc()
    await stop.wait()
    log.info("stopping")
    if controllers is not None:
        if controllers.done() and not controllers.cancelled() and controllers.exception():
            log.error("controllers failed", exc_info=controllers.exception())
            exit_code = 1
        controllers.cancel()
        try:
            await controllers
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("controllers failed while stopping")
            exit_code = 1
    store.close()  # ends open watch streams so the HTTP server can close
    kc_path.unlink(missing_ok=True)
    await runner.cleanup()
    return exit_code


def _start_controllers(store, settings: ServeSettings, network,
                       access=None) -> asyncio.Task | None:
    try:
        controllers = importlib.import_module("localcluster.controllers")
    except ModuleNotFoundError as e:
        if e.name != "localcluster.controllers":
            raise
        log.warning("localcluster.controllers is missing: serving without controllers")
        return None
    kwargs = {}
    if network.mode == "docker":
        from localcluster.runtime.docker_images import DockerImages
        from localcluster.kubelet.kubelet import KubeletConfig
        from localcluster.runtime.docker import DockerRuntime
        kwargs["kubelet_config"] = KubeletConfig(
            network=network, runtime=DockerRuntime(network.cluster), images=DockerImages())
    elif network.mode != "host":  # the host network is the kubelet's default
        from localcluster.kubelet.kubelet import KubeletConfig
        kwargs["kubelet_config"] = KubeletConfig(network=network)
    from localcluster.kubelet.kubelet import KubeletConfig
    config = kwargs.setdefault("kubelet_config", KubeletConfig())
    if settings.runtime == "fake":
        from localcluster.runtime.fake import FakeRuntime
        config.runtime = FakeRuntime()
    config.incluster, config.host_root = access, settings.host_root
    from localcluster.controllers.jobs import JobControllerConfig
    kwargs["job_config"] = JobControllerConfig(create_backoff_initial=settings.job_api_backoff)
    if settings.allocatable is not None:
        config.allocatable = dict(settings.allocatable)
    return asyncio.ensure_future(controllers.run_controllers(
        store, state_dir=settings.state_dir, image_files=list(settings.images), **kwargs))


def _cleanup_docker() -> list[str]:
    from localcluster.runtime.docker_client import docker_unavailable
    if docker_unavailable():
        return []
    from localcluster.network.docker_firewall import cleanup_host_guards
    from localcluster.runtime.docker import cleanup_leftovers as cleanup_docker
    return cleanup_docker() + cleanup_host_guards()


# The store holds every object, its history and its watch events as dicts, all of which the
# cyclic collector walks on each full collection: at 1,000 pods, 13 of them per benchmark level,
# ~0.26 s each (12 % of the stand-in's CPU, measured with gc.callbacks). Stored objects are JSON
# and make no cycles, so the collector runs rarely; reference counting frees the rest as before.
GC_THRESHOLDS = (50_000, 20, 20)


def _tune_gc() -> None:
    """Keep what start-up made (modules, schemas) out of every later collection, and collect
    less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["demo"]:
        from localcluster.demo import demo_main
        return demo_main(argv[1:]) or 0
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "cleanup-network":
        removed = cleanup_leftovers() + _cleanup_docker()
        print("\n".join(removed) or "nothing to remove")
        return 0
    try:
        network = NetworkSettings(mode=args.pod_network, cidr=args.pod_cidr,
                                  egress=tuple(parse_egress(e) for e in args.egress_allow))
    except NetworkError as e:
        parser.error(str(e))
    settings = ServeSettings(state_dir=args.state_dir.resolve(), port=args.port,
                             images=[p.resolve() for p in args.images], history=args.history,
                             bookmark_interval=args.bookmark_interval, network=network,
                             insecure_http=args.insecure_http, runtime=args.runtime,
                             host_root=args.host_root.resolve() if args.host_root else None,
                             job_api_backoff=args.job_api_backoff,
                             allocatable=node_allocatable(args.cpu, args.memory, args.pods,
                                                          args.ephemeral_storage, args.gpus))
    try:
        return asyncio.run(_serve(settings))
    except (NetworkError, TlsError) as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
