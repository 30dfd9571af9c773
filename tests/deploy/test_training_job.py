"""The Kubernetes training job (k8s/training/) and its image (deploy/trainer.Dockerfile), statically.

No cluster runs here: the manifests are checked against Kubernetes' schemas (kubernetes-validate,
offline, as deploy/check.sh does), and against what they drive: torchrun's own argument parser, the
`deepfm` command's parser and config, the headless Service the rendezvous address goes through,
the volumes the command writes into, the models store the scorers mount (README), and the image.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import REPO
from test_static import (
    TRAINER_DOCKERFILE,
    dockerfile_args,
    dockerfile_instructions,
    dockerignore_rules,
    in_build_context,
)
from torch.distributed.run import get_args_parser

from deepfm.cli import build_parser
from deepfm.config import ExperimentConfig

TRAINING = REPO / "k8s" / "training"
K8S_VERSIONS = ("1.29", None)  # as tests/deploy/test_static.py: the oldest claimed, and the newest


def documents() -> dict[str, list[dict[str, Any]]]:
    """kind -> manifests, over k8s/training/*.yaml but the kustomization."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(TRAINING.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out.setdefault(doc["kind"], []).append(doc)
    return out


def job() -> dict[str, Any]:
    (only,) = documents()["Job"]
    return only


def container() -> dict[str, Any]:
    (only,) = job()["spec"]["template"]["spec"]["containers"]
    return only


COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def torchrun_args(index: int = 0) -> Any:
    """torchrun's parse of the command of pod `index`, after Kubernetes expands $(NAME) from the env."""
    values = {}
    for var in container()["env"]:
        field = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        values[var["name"]] = str(index) if field == COMPLETION_INDEX else var.get("value")
    command = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], arg) for arg in container()["command"]]
    assert command[0] == "torchrun"
    return get_args_parser().parse_args(command[1:])


def mount_path(volume_claim: str) -> str:
    """Where the container mounts the persistent volume claim `volume_claim`."""
    pod = job()["spec"]["template"]["spec"]
    (volume,) = [
        v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == volume_claim
    ]
    (path,) = [m["mountPath"] for m in container()["volumeMounts"] if m["name"] == volume]
    return str(path)


def test_training_manifests_match_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = [doc for kind in documents().values() for doc in kind]
    assert {d["kind"] for d in docs} == {"Job", "Service", "PersistentVolumeClaim"}
    for version in K8S_VERSIONS:
        for doc in docs:
            kv.validate(doc, version or kv.latest_version(), strict=True)
    broken = json.loads(json.dumps(job()))
    broken["spec"]["completionsMode"] = "Indexed"  # a misspelt field: strict validation rejects it
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_every_pod_is_a_torchrun_node_meeting_pod_zero_through_the_headless_service() -> None:
    spec, args = job()["spec"], torchrun_args()
    pod = spec["template"]
    (service,) = documents()["Service"]
    assert spec["completionMode"] == "Indexed" and pod["spec"]["restartPolicy"] == "Never"
    assert spec["completions"] == spec["parallelism"] == int(args.nnodes)  # all nodes at once, or none meets
    # Node rank = completion index; node 0 hosts the store: pod <job>-0, named through the Service.
    assert [torchrun_args(index).node_rank for index in range(spec["completions"])] == list(range(spec["completions"]))
    assert args.master_addr == f"{job()['metadata']['name']}-0.{pod['spec']['subdomain']}"
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert all(pod["metadata"]["labels"][k] == v for k, v in service["spec"]["selector"].items())
    (port,) = container()["ports"]
    assert service["spec"]["ports"][0]["port"] == port["containerPort"] == args.master_port
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_the_command_trains_with_the_deepfm_cli_on_the_cpus_it_requests() -> None:
    args = torchrun_args()
    assert args.module and args.training_script == "deepfm"
    cli = build_parser().parse_args(args.training_script_args)
    assert cli.command == "train" and cli.export
    config = ExperimentConfig.from_yaml(REPO / cli.config, cli.override)  # the image's configs/ is the repo's
    resources = container()["resources"]
    assert resources["requests"] == resources["limits"]
    processes = int(args.nproc_per_node)
    assert int(resources["requests"]["cpu"]) == processes * config.training.num_threads
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert int(env["OMP_NUM_THREADS"]) == config.training.num_threads
    assert config.training.batch_size % (processes * int(args.nnodes)) == 0  # split evenly over the processes
    # It reads the data volume and writes the run and the artifact into the volumes that keep them.
    assert Path(env["DEEPFM_DATA_DIR"]).is_relative_to(mount_path("deepfm-data"))
    assert config.training.output_dir == mount_path("deepfm-runs")
    assert cli.store == mount_path("deepfm-models-store")


def test_it_exports_into_the_store_the_scorers_mount() -> None:
    readme = (REPO / "README.md").read_text()
    mounted_by_scorers = re.findall(r"persistentVolumeClaim: \{claimName: ([\w-]+), readOnly: true\}", readme)
    assert mounted_by_scorers == ["deepfm-models-store"]
    claims = {c["metadata"]["name"]: c for c in documents()["PersistentVolumeClaim"]}
    store = claims["deepfm-models-store"]
    assert store["spec"]["accessModes"] == ["ReadWriteMany"]  # trainer pods and scorers on any node
    assert mount_path("deepfm-models-store")
    data_mount = [m for m in container()["volumeMounts"] if m["mountPath"] == mount_path("deepfm-data")]
    assert data_mount[0]["readOnly"] is True


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = yaml.safe_load((TRAINING / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in TRAINING.glob("*.yaml") if p.stem != "kustomization"
    )
    (image,) = kustomization["images"]
    assert container()["image"].split(":")[0] == image["name"]


def test_trainer_image_holds_what_the_job_runs() -> None:
    text = TRAINER_DOCKERFILE.read_text()
    instructions = dockerfile_instructions(text)
    run = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "torch==2.13.0" in run and '".[train]"' in run and "serve" not in run
    (workdir,) = [rest for keyword, rest in instructions if keyword == "WORKDIR"]
    assert workdir == container()["workingDir"]
    (user,) = [rest for keyword, rest in instructions if keyword == "USER"]
    uid = re.sub(r"\$\{(\w+)\}", lambda m: dockerfile_args(text)[m.group(1)], user).split(":")[0]
    assert int(uid) == job()["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    # The build context: every COPY source, nothing else at the top (BuildKit reads <Dockerfile>.dockerignore).
    rules = dockerignore_rules(TRAINER_DOCKERFILE.with_name(TRAINER_DOCKERFILE.name + ".dockerignore"))
    sources = {src for keyword, rest in instructions if keyword == "COPY" for src in rest.split()[:-1]}
    assert sources == {"pyproject.toml", "README.md", "deepfm", "configs"}
    assert all(in_build_context(src, rules) for src in sources)
    for never in ("tests/conftest.py", "service/app.py", "models_store/deepfm/1/model.pt", "data/ml-100k/u.data"):
        assert not in_build_context(never, rules), never
    cli = build_parser().parse_args(torchrun_args().training_script_args)
    assert in_build_context(str(cli.config), rules)
