"""The Dockerfiles, offline: hadolint, and what they COPY and run exists in the repository.

These run without a Docker engine (tests/compose builds and runs the images for real): the files each
COPY names are in the build context (and not excluded by .dockerignore), every compose service builds its
own extra and runs its own module, the pinned requirements carry the service's own extra only.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from deploy_support import CONTAINER_DIRS, REPO

from flts.models.types import MODEL_TYPES

SERVICE_EXTRAS = {
    "gateway_container": "gateway",
    "preprocess_container": "preprocess",
    "train_container": "train",
    "nonML_container": "nonml",
    "eval_container": "eval",
    "inference_container": "inference",
}
HTTP_SERVICES = {"gateway_container", "inference_container"}
# Inference serves exported ONNX graphs (flts.models.exported): only the trainers carry PyTorch.
TORCH_SERVICES = {"train_container"}
DOCKERFILE = REPO / "Dockerfile"
DOCKERFILES = [DOCKERFILE, REPO / "deploy" / "mlflow" / "Dockerfile"]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        pending += " " + stripped.rstrip("\\").strip() if pending else stripped.rstrip("\\").strip()
        if stripped.endswith("\\"):
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def exec_form(args: str) -> list[str]:
    import json

    return json.loads(args) if args.startswith("[") else shlex.split(args)


# ------------------------------------------------------------------------------------------- .dockerignore


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rules: patterns in order, the last one matching the path or a parent of it wins."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((negate, _pattern_regex(pattern)))
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    outside = ".env .git/config .venv/bin/python tests/unit/test_x.py .helm/values.yaml .state/x"
    for path in [*outside.split(), "src/flts/__pycache__/config.cpython-311.pyc"]:
        assert dockerignored(path), f"{path} would be sent to the Docker daemon"
    inside = "pyproject.toml README.md src/flts/config.py config/pipeline.yaml inference_container/service.py"
    for path in [*inside.split(), "deploy/requirements/inference.txt"]:
        assert not dockerignored(path), f"{path} is excluded but the images need it"


# ------------------------------------------------------------------------------------------- the Dockerfile


def _arg_default(name: str) -> str:
    (default,) = [args.split("=", 1)[1] for keyword, args in instructions(DOCKERFILE) if args.startswith(f"{name}=")]
    return default.strip('"')


def _compose_build_args(compose_model: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Build args of every compose service built from the one Dockerfile, by service name."""
    return {
        name: service["build"].get("args", {})
        for name, service in compose_model["services"].items()
        if service.get("build", {}).get("dockerfile") == "Dockerfile"
    }


def test_one_dockerfile_for_every_service_no_copies() -> None:
    assert set(CONTAINER_DIRS) == set(SERVICE_EXTRAS)
    assert not list(REPO.glob("*_container/Dockerfile")), "the services build from the one root Dockerfile"
    for directory in CONTAINER_DIRS:
        assert (REPO / directory / "service.py").is_file(), directory


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_clean_at_error_level(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", str(dockerfile)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_copy_sources_exist_and_reach_the_build_context(dockerfile: Path) -> None:
    copies = [args for keyword, args in instructions(dockerfile) if keyword in {"COPY", "ADD"}]
    assert copies
    for args in copies:
        if "--from=" in args:
            continue  # from another stage
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        # ${SERVICE} stands for every service's extra.
        sources = [w.replace("${SERVICE}", extra) for w in words[:-1] for extra in set(SERVICE_EXTRAS.values())]
        for source in sources:
            matches = list(REPO.glob(source.rstrip("/")))
            assert matches, f"{dockerfile.relative_to(REPO)}: COPY {source} matches nothing"
            for match in matches:
                files = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
                for file in files:
                    rel = file.relative_to(REPO).as_posix()
                    if "__pycache__" in rel or rel.endswith(".pyc"):
                        continue
                    assert not dockerignored(rel), f"{rel} (COPY {source}) is excluded by .dockerignore"


def test_every_compose_service_builds_its_own_extra_and_runs_its_own_module(compose_model: dict[str, Any]) -> None:
    steps = instructions(DOCKERFILE)
    (cmd,) = [exec_form(args) for keyword, args in steps if keyword == "CMD"]
    assert cmd[-1] == 'exec python -m "$FLTS_SERVICE_MODULE".service', cmd
    built = _compose_build_args(compose_model)
    assert {args["SERVICE"] for args in built.values()} == set(SERVICE_EXTRAS.values())
    for name, args in built.items():
        module = args.get("SERVICE_MODULE", _arg_default("SERVICE_MODULE").replace("${SERVICE}", args["SERVICE"]))
        assert SERVICE_EXTRAS[module] == args["SERVICE"], f"{name}: {module} is not the {args['SERVICE']} service"
        assert (args.get("PYTORCH") == "yes") == (module in TORCH_SERVICES), f"{name}: PyTorch only where needed"
        assert ("HTTP_PORT" in args) == (module in HTTP_SERVICES), name


def test_image_hygiene() -> None:
    steps = instructions(DOCKERFILE)
    assert not DOCKERFILE.read_text().startswith("# syntax="), "a frontend image would have to be pulled"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", _arg_default("PYTHON_IMAGE"))
    assert _arg_default("TORCH_INDEX_URL") == "https://download.pytorch.org/whl/cpu", "users get the CPU build"
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and int(users[-1].split(":")[0]) >= 10000, users
    healthchecks = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[0] and "METRICS_PORT" in healthchecks[0]
    installs = [args for keyword, args in steps if keyword == "RUN" and "pip install" in args and " -r " in args]
    assert all("--mount=type=cache" in args for args in installs), "pip downloads are cached, not in layers"
    assert any("-r /tmp/requirements.txt" in args and "--no-deps" in args for args in installs)
    apt = [args for keyword, args in steps if keyword == "RUN" and "apt-get install" in args]
    # Every Python dependency is a wheel; the one system library is OpenMP's runtime, which LightGBM links against.
    assert len(apt) == 1 and "apt-get install -y --no-install-recommends libgomp1 &&" in apt[0], apt
    assert "rm -rf /var/lib/apt/lists/*" in apt[0], "no apt lists left in the layer"


def test_mlflow_image() -> None:
    steps = instructions(REPO / "deploy" / "mlflow" / "Dockerfile")
    (cmd,) = [exec_form(args) for keyword, args in steps if keyword == "CMD"]
    assert cmd[:2] == ["mlflow", "server"] and "--workers" in cmd
    requirements = (REPO / "deploy" / "requirements" / "mlflow.txt").read_text()
    assert re.search(r"^mlflow==", requirements, re.M) and re.search(r"^psycopg2-binary==", requirements, re.M)


# ------------------------------------------------------------------------------------------- requirements


def _names(requirements: str) -> set[str]:
    out = set()
    for line in requirements.splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert re.match(r"^[A-Za-z0-9_.\-\[\]]+==[^=\s;]+(\s*;.*)?$", line), f"not pinned: {line}"
            out.add(_normalise(line.split("==")[0]))
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.sub(r"\[.*\]", "", name)).lower()


def _requirement_name(spec: str) -> str:
    return _normalise(re.split(r"[<>=!~;\s\[]", spec, maxsplit=1)[0])


@pytest.mark.parametrize("extra", sorted(set(SERVICE_EXTRAS.values())))
def test_requirements_are_pinned_and_match_pyproject(extra: str) -> None:
    """Each image's lock holds its extra's dependencies (run deploy/lock.sh after changing pyproject.toml)."""
    pinned = _names((REPO / "deploy" / "requirements" / f"{extra}.txt").read_text())
    direct = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"][extra]
    missing = {_requirement_name(spec) for spec in direct} - pinned
    assert not missing, f"deploy/requirements/{extra}.txt lacks {missing}: run deploy/lock.sh"
    assert not {n for n in pinned if n.startswith(("nvidia-", "cuda-")) or n == "triton"}, "CUDA wheels in a CPU image"


def test_service_images_carry_only_their_own_heavy_dependencies() -> None:
    locks = {
        extra: _names((REPO / "deploy" / "requirements" / f"{extra}.txt").read_text())
        for extra in set(SERVICE_EXTRAS.values())
    }
    for extra, names in locks.items():
        if extra != "nonml":
            assert not {"prophet", "cmdstanpy"} & names, f"Prophet belongs to the nonml image only ({extra})"
    assert not {"mlflow", "flask", "sqlalchemy", "alembic"} & locks["inference"], (
        "the inference image carries the MLflow client (mlflow-skinny), not the training/server stack"
    )
    for extra in ("gateway", "preprocess", "eval", "nonml", "inference"):
        assert "torch" not in locks[extra], f"torch in the {extra} image"
    assert "torch" in locks["train"] and "onnx" in locks["train"], "trainers train and export the networks"
    assert "onnxruntime" in locks["inference"], "inference runs the exported graphs"


# A service's code imports these only inside functions its image never runs; each says which and why.
NOT_ON_THE_SERVICES_PATH = {
    ("gateway", "matplotlib"): "flts.plot.forecast_png: the CLI's PNG; the status page draws SVG",
    ("train", "onnxruntime"): "flts.models.exported.onnx_session: serving the exported graphs, not training",
    ("nonml", "torch"): "flts.models.exported.export_graph: exporting a network, which only the trainers do",
    ("inference", "torch"): "flts.models.exported.export_graph: exporting a network, which only the trainers do",
}


def _module_file(module: str) -> Path | None:
    parts = module.split(".")
    path = (REPO / "src" if parts[0] == "flts" else REPO).joinpath(*parts)
    return next((p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None)


def _third_party_imports(*modules: str) -> set[str]:
    """Top-level names of the third-party modules `modules` and the project modules they reach import,
    function bodies included (the lazy imports are the ones a missing wheel breaks at run time)."""
    seen: set[str] = set()
    pending, found = list(modules), set()
    while pending:
        name = pending.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in imported:
                top = target.split(".")[0]
                if top == "flts" or top.endswith("_container"):
                    pending.append(target)
                elif top not in sys.stdlib_module_names:
                    found.add(top)
    return found


def _table_modules(service: str) -> set[str]:
    """The modules a trainer imports by name from the table of model types (flts.models.types): the fits and
    loaders of the types it trains, "module:attribute" strings that the walk over import statements cannot see."""
    specs = [spec for spec in MODEL_TYPES if spec.trainer == service]
    return {target.partition(":")[0] for spec in specs for target in (spec.fit, spec.loader)}


@pytest.mark.parametrize(("container", "extra"), sorted(SERVICE_EXTRAS.items()))
def test_every_module_a_service_can_import_is_installed_in_its_image(container: str, extra: str) -> None:
    """The nonML image once lacked onnxruntime, which LightGBM's scoring imports inside a function: no
    offline check saw it, and every LightGBM run failed in compose."""
    pinned = _names((REPO / "deploy" / "requirements" / f"{extra}.txt").read_text())
    distributions = importlib.metadata.packages_distributions()
    imports = _third_party_imports(f"{container}.service", *_table_modules(extra))
    missing = {
        top
        for top in imports
        if not {_normalise(d) for d in distributions.get(top, [top])} & pinned
        and (extra, top) not in NOT_ON_THE_SERVICES_PATH
    }
    assert not missing, f"{container} imports {sorted(missing)}, which deploy/requirements/{extra}.txt lacks"
    for (service, top), why in NOT_ON_THE_SERVICES_PATH.items():
        if service == extra:
            assert top in imports, f"stale exception: {top} ({why})"
