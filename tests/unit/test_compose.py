"""docker-compose.yml describes the production stack: every service the code needs, with the
settings the code reads (no Docker engine here, so the file is checked, not run)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from aktenlauf.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
APP_SERVICES = ("api", "worker", "ocr-worker", "migrate", "search-attributes", "mailroom-watch", "mailroom-imap")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _resolve(value: str) -> str:
    """${VAR:?msg} / ${VAR:-default} → a stand-in value, as compose would with a filled .env."""
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(3)
        return default if default is not None and m.group(2) == ":-" and default else f"prod-{name.lower()}-0123456789abcdef0123456789"
    return re.sub(r"\$\{(\w+)(:[?-])?([^}]*)?\}", sub, str(value))


def test_the_stack_has_every_server_the_code_needs() -> None:
    services = _compose()["services"]
    for name in ("postgres", "temporal", "temporal-ui", "minio", *APP_SERVICES):
        assert name in services, name
    assert "postgres" in services["temporal"]["environment"]["DB"]


def test_app_services_only_set_settings_the_code_reads() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = _compose()["services"][name]["environment"]
        unknown = set(env) - fields
        assert not unknown, f"{name} sets {unknown}, which Settings does not read"


def test_app_services_set_every_production_setting() -> None:
    required = {"DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "S3_ENDPOINT", "S3_ACCESS_KEY",
                "S3_SECRET_KEY", "S3_BUCKET", "JWT_SECRET", "PAYMENT_WEBHOOK_SECRET", "CERTIFICATE_CODE_SECRET",
                "PAYLOAD_KEYS", "PUBLIC_BASE_URL", "ENVIRONMENT"}
    for name in APP_SERVICES:
        env = _compose()["services"][name]["environment"]
        assert required <= set(env), f"{name} lacks {required - set(env)}"


def test_the_compose_environment_builds_valid_production_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import base64

    env = {k: _resolve(v) for k, v in _compose()["services"]["api"]["environment"].items()}
    env["PAYLOAD_KEYS"] = "k1:" + base64.b64encode(b"p" * 32).decode()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.environment == "production"
    assert s.database_url.startswith("postgresql+psycopg://")
    host = s.s3_endpoint.split(":")[0]
    assert host in _compose()["services"]
    assert s.temporal_address.split(":")[0] in _compose()["services"]


def test_workers_serve_both_task_queues() -> None:
    services = _compose()["services"]
    assert services["worker"]["command"][-1] == "cases"
    assert services["ocr-worker"]["command"][-1] == "ocr"
    assert "api" in services["api"]["command"]


def test_every_app_command_is_one_the_cli_accepts() -> None:
    """The compose commands go through the real argument parser: a renamed or removed option
    fails here, not at deployment."""
    from aktenlauf.cli import build_parser

    parser = build_parser()
    for name in APP_SERVICES:
        command = _compose()["services"][name]["command"]
        assert command[0] == "aktenlauf", name
        args = parser.parse_args(command[1:])
        assert callable(args.fn), name
    api = parser.parse_args(_compose()["services"]["api"]["command"][1:])
    assert api.workers >= 2 and api.host == "0.0.0.0"  # several API processes per replica, reachable
