"""Every file in cluster/ is checked the way its tool would read it, so a typo fails CI.

- Ray cluster launcher YAMLs: filled out and validated exactly as ``ray up`` does, against the
  cluster-config schema (ray-schema.json) that ships with the installed Ray.
- KubeRay manifests: the RayCluster / RayJob spec fields of the KubeRay v1 CRDs (listed below), and
  every pod template, Service and PersistentVolumeClaim field against the Kubernetes API models of
  the ``kubernetes`` client package.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHER_YAMLS = sorted(CLUSTER.glob("*.yaml"))
KUBE_YAMLS = sorted((CLUSTER / "kuberay").glob("*.yaml"))

# KubeRay v1 (ray.io/v1) spec fields: the json names of the Go structs in ray-operator/apis/ray/v1.
# value: None = free-form / not checked further, a str = a Kubernetes model, a dict = nested spec.
POD_TEMPLATE = "V1PodTemplateSpec"
HEAD_GROUP = {"rayStartParams": None, "template": POD_TEMPLATE, "serviceType": None, "headService": "V1Service",
              "enableIngress": None, "resources": None, "labels": None}
WORKER_GROUP = {"groupName": None, "replicas": None, "minReplicas": None, "maxReplicas": None,
                "idleTimeoutSeconds": None, "rayStartParams": None, "template": POD_TEMPLATE,
                "scaleStrategy": None, "numOfHosts": None, "suspend": None, "resources": None, "labels": None}
RAYCLUSTER_SPEC = {"rayVersion": None, "headGroupSpec": HEAD_GROUP, "workerGroupSpecs": [WORKER_GROUP],
                   "enableInTreeAutoscaling": None, "autoscalerOptions": None, "headServiceAnnotations": None,
                   "suspend": None, "managedBy": None, "gcsFaultToleranceOptions": None, "upgradeStrategy": None,
                   "authOptions": None}
RAYJOB_SPEC = {"entrypoint": None, "runtimeEnvYAML": None, "jobId": None, "metadata": None,
               "shutdownAfterJobFinishes": None, "ttlSecondsAfterFinished": None, "activeDeadlineSeconds": None,
               "rayClusterSpec": RAYCLUSTER_SPEC, "clusterSelector": None, "submitterPodTemplate": POD_TEMPLATE,
               "submitterConfig": None, "entrypointNumCpus": None, "entrypointNumGpus": None,
               "entrypointResources": None, "submissionMode": None, "suspend": None, "managedBy": None,
               "backoffLimit": None, "deletionStrategy": None}
CRDS = {("ray.io/v1", "RayCluster"): RAYCLUSTER_SPEC, ("ray.io/v1", "RayJob"): RAYJOB_SPEC}
CORE = {("v1", "Service"): "V1Service", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim"}


def k8s_problems(obj, model: str, where: str) -> list[str]:
    """Unknown fields and wrong scalar types in ``obj`` read as the Kubernetes model ``model``."""
    import kubernetes.client as k8s

    m = re.fullmatch(r"[lL]ist\[(.+)\]", model)
    if m:
        if not isinstance(obj, list):
            return [f"{where}: expected a list, got {type(obj).__name__}"]
        return [p for i, x in enumerate(obj) for p in k8s_problems(x, m.group(1), f"{where}[{i}]")]
    m = re.fullmatch(r"[dD]ict[\[(]str, (.+)[\])]", model)
    if m:
        if not isinstance(obj, dict):
            return [f"{where}: expected a mapping, got {type(obj).__name__}"]
        return [p for k, x in obj.items() for p in k8s_problems(x, m.group(1), f"{where}.{k}")]
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if model in scalars:
        ok = isinstance(obj, scalars[model]) and not (model == "int" and isinstance(obj, bool))
        return [] if ok else [f"{where}: expected {model}, got {obj!r}"]
    if model == "object" or not hasattr(k8s, model):
        return []
    cls = getattr(k8s, model)
    if not isinstance(obj, dict):
        return [f"{where}: expected a {model} mapping, got {type(obj).__name__}"]
    by_json = {j: a for a, j in cls.attribute_map.items()}
    out = []
    for key, val in obj.items():
        if key not in by_json:
            out.append(f"{where}.{key}: unknown field of {model}")
        else:
            out += k8s_problems(val, cls.openapi_types[by_json[key]], f"{where}.{key}")
    return out


def spec_problems(obj, spec, where: str) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):
        return k8s_problems(obj, spec, where)
    if isinstance(spec, list):
        if not isinstance(obj, list):
            return [f"{where}: expected a list"]
        return [p for i, x in enumerate(obj) for p in spec_problems(x, spec[0], f"{where}[{i}]")]
    if not isinstance(obj, dict):
        return [f"{where}: expected a mapping"]
    out = []
    for key, val in obj.items():
        if key not in spec:
            out.append(f"{where}.{key}: unknown field")
        else:
            out += spec_problems(val, spec[key], f"{where}.{key}")
    return out


def manifest_problems(doc: dict, source: str) -> list[str]:
    kind = (doc.get("apiVersion"), doc.get("kind"))
    where = f"{source}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if kind in CRDS:
        unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec"}
        return [f"{where}.{k}: unknown field" for k in sorted(unknown)] + \
            k8s_problems(doc.get("metadata", {}), "V1ObjectMeta", f"{where}.metadata") + \
            spec_problems(doc.get("spec"), CRDS[kind], f"{where}.spec")
    if kind in CORE:
        return k8s_problems(doc, CORE[kind], where)
    return [f"{where}: unexpected apiVersion/kind {kind}"]


def test_cluster_folder_has_aws_gcp_and_kuberay():
    names = {p.name for p in LAUNCHER_YAMLS}
    assert {"aws-gpu.yaml", "gcp-gpu.yaml"} <= names
    assert {"raycluster.yaml", "rayjob.yaml"} <= {p.name for p in KUBE_YAMLS}


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_yaml_passes_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    # the cluster installs raybench as the README says and starts an MLflow server for its jobs
    setup = " ".join(cfg["setup_commands"])
    assert 'pip install -e ".[dev]"' in setup
    head = " ".join(cfg["head_start_ray_commands"])
    assert "mlflow server" in head and "sqlite:" in head and "--artifacts-destination" in head
    assert "MLFLOW_TRACKING_URI" in head and "MLFLOW_TRACKING_URI" in " ".join(cfg["worker_start_ray_commands"])
    assert cfg["file_mounts"] == {"/home/ubuntu/raybench": "."}
    # Python 3.11 in a virtualenv (an image's python3 may be older), and not the checkout's own .venv copied over
    assert "venv --seed --python 3.11 ~/venv" in setup and "source ~/venv/bin/activate" in setup
    assert ".venv" in cfg["rsync_exclude"]
    if path.name == "aws-gpu.yaml":  # Ray gives its instance profile to the head only: the workers need the bucket
        nodes = cfg["available_node_types"]
        assert "IamInstanceProfile" in nodes["gpu_worker"]["node_config"]
        assert all(n["node_config"]["ImageId"] != "latest_dlami" for n in nodes.values())  # Ubuntu 18.04: glibc 2.27


def test_the_image_leaves_out_a_local_virtualenv():
    ignored = (CLUSTER.parent / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_a_typo_in_a_launcher_yaml_fails_validation(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load(path.read_text())
    node = next(iter(cfg["available_node_types"].values()))
    node["min_worker"] = node.pop("min_workers", 1)
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(cfg))


@pytest.mark.parametrize("path", KUBE_YAMLS, ids=lambda p: p.name)
def test_kuberay_manifests_use_only_known_fields(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    problems = [p for d in docs for p in manifest_problems(d, path.name)]
    assert problems == []
    text = path.read_text()
    pods = [d for d in docs if d.get("kind") in ("RayCluster", "RayJob")]
    assert pods and text.count("serviceAccountName:") >= 2  # the pods' cloud identity reaches the bucket
    assert "python -m raybench.sweep" in text or "mlflow server" in text
    assert "MLFLOW_TRACKING_URI" in text


def test_kuberay_check_catches_typos():
    doc = yaml.safe_load_all((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    rc = next(d for d in doc if d.get("kind") == "RayCluster")
    bad = copy.deepcopy(rc)
    bad["spec"]["workerGroupSpecs"][0]["replica"] = 2
    assert any("replica: unknown field" in p for p in manifest_problems(bad, "x"))
    bad = copy.deepcopy(rc)
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert any("imagePullPolcy: unknown field of V1Container" in p for p in manifest_problems(bad, "x"))
    bad = copy.deepcopy(rc)
    bad["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6379"
    assert any("containerPort: expected int" in p for p in manifest_problems(bad, "x"))
