"""deploy/: recipes stay valid, the TLS recipe really secures a cluster, and the Prefect deployment really runs."""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_records
from conftest import VFDB_SLICE_TOML as SLICE_TOML

# a system test: real Prefect flows, Dask clusters, torch models or processes (`make check` leaves it out)
pytestmark = pytest.mark.system

DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent

def test_every_recipe_parses():
    docs = {p.relative_to(DEPLOY).as_posix(): list(yaml.safe_load_all(p.read_text())) for p in DEPLOY.rglob("*.yaml")}
    assert {"hosts/dask-tls.yaml", "kubernetes/daskcluster.yaml", "kubernetes/gpu-workergroup.yaml", "slurm/jobqueue.yaml", "prefect/prefect.yaml"} <= set(docs)
    assert docs["kubernetes/daskcluster.yaml"][0]["kind"] == "DaskCluster"
    gpu_args = docs["kubernetes/gpu-workergroup.yaml"][0]["spec"]["worker"]["spec"]["containers"][0]["args"]
    assert "GPU=1" in gpu_args
    assert docs["slurm/jobqueue.yaml"][0]["jobqueue"]["slurm"]["processes"] > 0
    assert docs["hosts/dask-tls.yaml"][0]["distributed"]["comm"]["require-encryption"] is True
    prefect_doc = docs["prefect/prefect.yaml"][0]
    for dep in prefect_doc["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert f"def {func}(" in (REPO / path).read_text()
    text = (DEPLOY / "prefect" / "prefect.yaml").read_text().lower()
    assert "password" not in text and "auth_string:" not in text  # secrets come from the environment
    for script in DEPLOY.rglob("*.sh"):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    for dockerfile in DEPLOY.rglob("Dockerfile*"):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (REPO / src).exists(), (dockerfile, src)
    compile((DEPLOY / "slurm" / "start_cluster.py").read_text(), "start_cluster.py", "exec")


def test_the_kubernetes_pods_run_commands_that_exist_with_flags_they_take():
    """The containers' args are the command (the images have no entrypoint): `dask worker` / `dask scheduler` as the
    installed dask has them, each flag one its --help lists, workers pointed at the TLS scheduler (the operator's
    default address is tcp://), images tagged with this version, both images on one Python."""
    import ecgpipe

    helps = {cmd: subprocess.run([str(BIN / "dask"), cmd, "--help"], capture_output=True, text=True, check=True).stdout
             for cmd in ("worker", "scheduler")}
    containers = []
    for name in ("daskcluster.yaml", "gpu-workergroup.yaml"):
        spec = yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())["spec"]
        containers += [c for part in ("worker", "scheduler") if part in spec for c in spec[part]["spec"]["containers"]]
    assert len(containers) == 3
    for c in containers:
        program, command, *rest = c["args"]
        assert program == "dask" and command in helps, c["args"]
        assert all(f"{a} " in helps[command] or f"{a}," in helps[command] for a in rest if a.startswith("--")), c["args"]
        if command == "worker":
            assert rest[0] == "tls://ecgpipe-scheduler:8786"
        assert c["image"].endswith((f":{ecgpipe.__version__}-cpu", f":{ecgpipe.__version__}-cuda")), c["image"]
    cpu, cuda = ((DEPLOY / "docker" / f"Dockerfile.{kind}").read_text() for kind in ("cpu", "cuda"))
    assert "FROM python:3.12-slim" in cpu and "ubuntu24.04" in cuda  # Ubuntu 24.04's Python is 3.12
    assert f"ecgpipe-worker:{ecgpipe.__version__}-cpu" in cpu and f"ecgpipe-worker:{ecgpipe.__version__}-cuda" in cuda


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_cluster(tmp_path):
    certs = tmp_path / "tls"
    subprocess.run(["bash", str(DEPLOY / "hosts" / "make-certs.sh"), str(certs)], check=True, capture_output=True)
    port = _free_port()
    env = dict(os.environ, TLS_DIR=str(certs), PORT=str(port), DASHBOARD=":0", SCHEDULER=f"127.0.0.1:{port}",
               NWORKERS="1", PATH=f"{BIN}:{os.environ['PATH']}")
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True, "cwd": tmp_path}
    procs = [subprocess.Popen(["bash", str(DEPLOY / "hosts" / "scheduler.sh")], **quiet)]
    procs.append(subprocess.Popen(["bash", str(DEPLOY / "hosts" / "cpu-worker.sh")], **quiet))
    yield f"tls://127.0.0.1:{port}", certs
    for p in reversed(procs):
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


def refused(address: str, security, errors: tuple) -> None:
    """A client the scheduler must refuse. The half-started Client is collected right here: left to the cyclic
    garbage collector, it can be finalised inside the next Client's start, and its ``__del__`` then waits for the
    LoopRunner lock that start holds (a distributed deadlock that hung CI once, 2026-12-04)."""
    from distributed import Client

    with pytest.raises(errors):
        Client(address, timeout=5, **({"security": security} if security is not None else {}))
    gc.collect()


def test_tls_cluster_runs_the_flow_and_refuses_clients_without_certificate(tmp_path, physionet, prefect_server, tls_cluster):
    from distributed import Client
    from distributed.security import Security

    address, certs = tls_cluster
    good = Security(
        tls_ca_file=str(certs / "ca.pem"), tls_client_cert=str(certs / "client.pem"), tls_client_key=str(certs / "client-key.pem"),
        require_encryption=True,
    )
    deadline = time.time() + 60
    while True:
        try:
            with Client(address, timeout=10, security=good) as c:
                c.wait_for_workers(1, timeout=120)
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    data = tmp_path / "data"
    copy_records(physionet, data, "vfdb", ["418", "426"])
    cfg = tmp_path / "c.toml"
    cfg.write_text(SLICE_TOML)
    # the client side of the recipe: deploy/hosts/dask-tls.yaml's settings, here as DASK_* environment variables
    env = dict(
        os.environ,
        DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True",
        DASK_DISTRIBUTED__COMM__TLS__CA_FILE=str(certs / "ca.pem"),
        DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=str(certs / "client.pem"),
        DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=str(certs / "client-key.pem"),
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "ecgpipe.cli", "run", "--config", str(cfg), "--data-dir", str(data), "--out", str(out), "--scheduler", address],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / "report.json").read_text())["n_segments"] > 0

    # the scheduler refuses a client whose certificate comes from another CA, and a plain-TCP client
    rogue = tmp_path / "rogue"
    subprocess.run(["bash", str(DEPLOY / "hosts" / "make-certs.sh"), str(rogue)], check=True, capture_output=True)
    rogue_security = Security(
        tls_ca_file=str(certs / "ca.pem"), tls_client_cert=str(rogue / "client.pem"), tls_client_key=str(rogue / "client-key.pem"),
        require_encryption=True,
    )
    refused(address, rogue_security, (OSError, TimeoutError))
    refused(address.replace("tls://", "tcp://"), None, (OSError, TimeoutError, ValueError, TypeError))
    refused(address, Security(tls_ca_file=str(certs / "ca.pem")), (OSError, TimeoutError, TypeError))  # no client cert
    # a node certificate (right CA, wrong role) is not accepted as a client (the scheduler's tls_roles preload)
    node_as_client = Security(
        tls_ca_file=str(certs / "ca.pem"), tls_client_cert=str(certs / "node.pem"), tls_client_key=str(certs / "node-key.pem"),
        require_encryption=True,
    )
    refused(address, node_as_client, (OSError, TimeoutError, AssertionError, PermissionError))
    # and the client certificate cannot join as a worker: a worker started with it never registers
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    rogue_worker = subprocess.Popen(
        [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--dashboard-address", "127.0.0.1:0", "--name", "rogue",
         "--tls-ca-file", str(certs / "ca.pem"), "--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client-key.pem")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    try:
        time.sleep(15)
        with Client(address, timeout=10, security=good) as c:
            names = {w["name"] for w in c.scheduler_info(n_workers=-1)["workers"].values()}
        assert "rogue" not in names and len(names) == 1
    finally:
        os.killpg(rogue_worker.pid, signal.SIGKILL)
        rogue_worker.wait()


def test_prefect_deployment_runs_through_a_server_and_a_process_worker(tmp_path, physionet):
    """`prefect server start`, a process work pool, `prefect deploy` of deploy/prefect/prefect.yaml, a worker,
    `prefect deployment run` with parameters: the flow run completes and writes its report."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ, PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api, ECGPIPE_REPO=str(REPO),
               PATH=f"{BIN}:{os.environ['PATH']}", PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_AUTH_STRING", None)
    prefect = str(BIN / "prefect")
    procs = []
    log = open(tmp_path / "server.log", "w")
    procs.append(subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        import httpx

        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("prefect server did not start: " + (tmp_path / "server.log").read_text()[-2000:])

        def prefect_cli(*args):
            proc = subprocess.run([prefect, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return proc.stdout

        prefect_cli("work-pool", "create", "ecgpipe-local", "--type", "process")
        for name in ("paper4-nightly", "on-cluster"):  # one by one, as deploy/README.md says (`--all` stops after one)
            deploy = subprocess.run(
                [prefect, "--no-prompt", "deploy", "--prefect-file", str(DEPLOY / "prefect" / "prefect.yaml"), "--name", name],
                env=env, cwd=REPO, capture_output=True, text=True, timeout=180,
            )
            assert "successfully created" in deploy.stdout, deploy.stdout + deploy.stderr
            # Prefect 3.8.8's CLI creates the deployment, then its "any workers online?" hint sends limit=None, which
            # the 3.8.8 server rejects (422 on /workers/filter): a known wart of that release, harmless for the
            # deployment, but it ends `prefect deploy --all` after the first deployment
            assert deploy.returncode == 0 or "workers/filter" in deploy.stdout + deploy.stderr, deploy.stdout + deploy.stderr
            assert f"'{name}'" in prefect_cli("deployment", "inspect", f"ecgpipe-run/{name}")  # the documented check
        wlog = open(tmp_path / "worker.log", "w")
        procs.append(subprocess.Popen([prefect, "worker", "start", "--pool", "ecgpipe-local"], env=env, cwd=REPO,
                                      stdout=wlog, stderr=subprocess.STDOUT, start_new_session=True))
        data = tmp_path / "data"
        copy_records(physionet, data, "vfdb", ["418", "426"])
        cfg = tmp_path / "c.toml"
        cfg.write_text(SLICE_TOML)
        out = tmp_path / "out"
        prefect_cli("deployment", "run", "ecgpipe-run/paper4-nightly", "--param", f"config={cfg}",
                    "--param", f"data_dir={data}", "--param", f"out_dir={out}")

        from prefect.client.orchestration import SyncPrefectClient
        from prefect.client.schemas.sorting import FlowRunSort

        state = None
        deadline = time.time() + 300
        with SyncPrefectClient(api) as client:
            while time.time() < deadline:
                runs = [r for r in client.read_flow_runs(limit=20, sort=FlowRunSort.START_TIME_DESC) if r.deployment_id]
                state = runs[0].state if runs else None
                if state is not None and state.is_final():
                    break
                time.sleep(2)
        assert state is not None and state.is_completed(), (state, (tmp_path / "worker.log").read_text()[-3000:])
        report = json.loads((out / "report.json").read_text())
        assert report["n_segments"] > 0 and json.loads((out / "run.json").read_text())["status"] == "completed"
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_the_slurm_recipe_starts_a_tls_cluster_that_its_gpu_jobs_join(tmp_path):
    """deploy/slurm/start_cluster.py without SLURM: its SLURMCluster starts (the cluster object connects to its own
    scheduler as a client, with the client pair), and the worker command of its GPU job script, run here as sbatch
    would, joins that scheduler with the GPU resource over TLS. sbatch itself is not run."""
    import importlib.util
    import shlex

    from distributed import Client

    spec = importlib.util.spec_from_file_location("start_cluster", DEPLOY / "slurm" / "start_cluster.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    certs = tmp_path / "tls"
    subprocess.run(["bash", str(DEPLOY / "hosts" / "make-certs.sh"), str(certs)], check=True, capture_output=True)
    security = recipe.cluster_security(certs)
    cluster = recipe.cpu_cluster(security, cores=1, memory="1GiB", scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
    worker = None
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        script = recipe.gpu_job_script(cluster.scheduler_address, security)
        assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu" in script
        command = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
        assert command.split()[3] == cluster.scheduler_address
        argv = shlex.split(command.replace("${SLURM_JOB_ID}", "4242"))
        worker = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        with Client(cluster, timeout=30) as client:  # the cluster's own security: the client pair
            client.wait_for_workers(1, timeout=120)
            [info] = client.scheduler_info()["workers"].values()
            assert info["resources"] == {"GPU": 1} and info["name"] == "ecgpipe-gpu-4242"
            assert client.submit(sum, [1, 2], resources={"GPU": 1}).result(timeout=60) == 3
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)
        cluster.close()


def test_recipes_are_hardened():
    """TLS on every recipe, dashboards on loopback, images and pods that never run as root, a CUDA image whose Python
    its base image provides, and separate node and client certificates."""
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        lines = (DEPLOY / "docker" / name).read_text().splitlines()
        users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), name
    cuda = (DEPLOY / "docker" / "Dockerfile.cuda").read_text()
    assert "ubuntu24.04" in cuda and "python3.11" not in cuda and "python3-venv" in cuda
    for name in ("daskcluster.yaml", "gpu-workergroup.yaml"):
        doc = yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())
        specs = [doc["spec"]["worker"]["spec"]] + ([doc["spec"]["scheduler"]["spec"]] if "scheduler" in doc["spec"] else [])
        for spec in specs:
            for container in spec["containers"]:
                assert container["securityContext"]["runAsNonRoot"] is True
                assert "--tls-cert" in container["args"] and "/tls/node.pem" in container["args"]
                assert {"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"} in container["env"]
                if "--dashboard-address" in container["args"]:
                    assert container["args"][container["args"].index("--dashboard-address") + 1].startswith("127.0.0.1:")
            assert any(v.get("secret", {}).get("secretName") == "ecgpipe-tls" for v in spec["volumes"])
    scheduler_args = yaml.safe_load((DEPLOY / "kubernetes" / "daskcluster.yaml").read_text())["spec"]["scheduler"]["spec"]["containers"][0]["args"]
    assert scheduler_args[scheduler_args.index("--protocol") + 1] == "tls"
    assert scheduler_args[scheduler_args.index("--preload") + 1] == "ecgpipe.orchestration.tls_roles"
    assert "--preload ecgpipe.orchestration.tls_roles" in (DEPLOY / "hosts" / "scheduler.sh").read_text()
    assert '"preload": ["ecgpipe.orchestration.tls_roles"]' in (DEPLOY / "slurm" / "start_cluster.py").read_text()
    slurm = (DEPLOY / "slurm" / "start_cluster.py").read_text()
    assert 'protocol="tls://"' in slurm and "security=security" in slurm and "tls_client_cert" in slurm
    jobqueue = yaml.safe_load((DEPLOY / "slurm" / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    assert jobqueue["worker-extra-args"] == ["--dashboard-address", "127.0.0.1:0"]
    for script in ("scheduler.sh", "cpu-worker.sh", "gpu-worker.sh"):
        assert "127.0.0.1:" in (DEPLOY / "hosts" / script).read_text(), script


def test_node_and_client_certificates_are_separate(tmp_path):
    subprocess.run(["bash", str(DEPLOY / "hosts" / "make-certs.sh"), str(tmp_path)], check=True, capture_output=True)

    def usage(name):
        text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / name), "-noout", "-text"], capture_output=True, text=True, check=True).stdout
        return text.split("X509v3 Extended Key Usage:")[1].splitlines()[1].strip(), text.split("Subject:")[1].splitlines()[0]

    node, client = usage("node.pem"), usage("client.pem")
    assert node[0] == "TLS Web Server Authentication, TLS Web Client Authentication" and "ecgpipe-node" in node[1]
    assert client[0] == "TLS Web Client Authentication" and "ecgpipe-client" in client[1]
    assert (tmp_path / "node-key.pem").read_bytes() != (tmp_path / "client-key.pem").read_bytes()
    assert oct((tmp_path / "client-key.pem").stat().st_mode & 0o777) == "0o600"


def test_a_deployment_takes_the_run_commands_verify_pilot_and_strict_settings():
    """A scheduled run can hash every finished unit (after an edit on a shared file system), run a pilot, or stop at
    the first bad record, as `ecgpipe run --verify / --max-records / --strict` do."""
    import inspect

    from flows.deployment import deployment_config, ecgpipe_run

    assert {"verify", "max_records", "strict"} <= set(inspect.signature(ecgpipe_run.fn).parameters)
    cfg = deployment_config("paper4", verify=True, max_records=3)
    assert cfg.run.verify == "content" and cfg.run.max_records == 3
    plain = deployment_config("paper4")
    assert plain.run.verify == "stamp" and plain.run.max_records is None
