"""Production settings fail fast and pass Django's deployment checklist.

Each test imports the settings in a fresh process with an environment it controls: only PATH-like
variables are inherited, never the database, broker, archive or warehouse settings of the test run.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 20 + "QmV0dGVyLXRoYW4tYS1kZXYta2V5LWZvci1zdXJl" + "x" * 10
#: what the settings read; a subprocess never inherits these from the test run
CONFIGURATION = {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "DJANGO_ALLOW_ASYNC_UNSAFE",
                 "DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL", "RAW_ARCHIVE_URL",
                 "RAW_ARCHIVE_BUCKET", "CHATORBIT_VAR_DIR",
                 "ARCHIVE_ENCRYPTION", "ARCHIVE_KMS_KEY_ID", "ARCHIVE_LOCAL_MASTER_KEY",
                 "ARCHIVE_LOCAL_MASTER_KEY_FILE", "SUBJECT_HASH_SECRET"}
CONFIGURATION_PREFIXES = ("SNOWFLAKE_", "AWS_")


def clean_env(**env: str) -> dict[str, str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in CONFIGURATION and not k.startswith(CONFIGURATION_PREFIXES)}
    full_env.update(env)
    return full_env


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=clean_env(**env), capture_output=True,
                          text=True, timeout=120)


def settings_probe(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` after django.setup() (so after the settings import) in a fresh process."""
    script = "import django, json, os\nos.environ['DJANGO_SETTINGS_MODULE'] = 'portal.settings'\ndjango.setup()\n"
    return subprocess.run([sys.executable, "-c", script + textwrap.dedent(code)], cwd=ROOT, env=clean_env(**env),
                          capture_output=True, text=True, timeout=120)


#: prints warehouse_params() for the default and each workload; key bytes as their SHA-256
PARAMS_PROBE = """
    import hashlib
    from warehouse.connection import warehouse_params

    def shown(params):
        return {k: hashlib.sha256(v).hexdigest() if isinstance(v, bytes) else v for k, v in params.items()}

    print(json.dumps({"default": shown(warehouse_params()),
                      **{w: shown(warehouse_params(workload=w)) for w in ("ingest", "merge", "models", "dashboards")}}))
"""


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key, passphrase: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def der_sha256(key) -> str:
    return hashlib.sha256(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())).hexdigest()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snowflake") / "rsa_key.p8"
    path.write_bytes(pem(rsa_key()))
    path.chmod(0o600)
    return path


@pytest.fixture
def production_env(key_file) -> dict[str, str]:
    """A complete production environment: key-pair sign-in, an S3 archive, PostgreSQL and Redis."""
    return {
        "DEBUG": "0", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "contracts.chatorbit.example",
        "DATABASE_URL": "postgres://chatorbit@db.chatorbit.internal:5432/chatorbit",
        "CELERY_BROKER_URL": "redis://cache.chatorbit.internal:6379/0",
        "REDIS_URL": "redis://cache.chatorbit.internal:6379/1",
        "RAW_ARCHIVE_URL": "s3://chatorbit-raw-archive/raw",
        "ARCHIVE_KMS_KEY_ID": "alias/chatorbit-raw-archive", "SUBJECT_HASH_SECRET": "h" * 16 + GOOD_KEY[:24],
        "SNOWFLAKE_ACCOUNT": "myorg-chatorbit", "SNOWFLAKE_USER": "CHATORBIT_SVC",
        "SNOWFLAKE_PRIVATE_KEY_FILE": str(key_file),
        "SNOWFLAKE_ROLE": "CHATORBIT_PIPELINE", "SNOWFLAKE_WAREHOUSE": "CHATORBIT_WH",
        "SNOWFLAKE_WAREHOUSE_MERGE": "CHATORBIT_MERGE_WH", "SNOWFLAKE_WAREHOUSE_DASHBOARDS": "CHATORBIT_BI_WH",
    }


def test_production_refuses_to_start_without_a_secret_key():
    result = manage("check", DEBUG="0", ALLOWED_HOSTS="contracts.chatorbit.example")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_the_development_key():
    result = manage("check", DEBUG="0", ALLOWED_HOSTS="contracts.chatorbit.example",
                    SECRET_KEY="dev-only-insecure-key-do-not-use-in-production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_passes_the_deploy_checklist(production_env):
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_malformed_debug_flag_is_named():
    result = manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG must be one of" in result.stderr


def test_production_with_nothing_set_names_every_missing_setting_at_once():
    result = manage("check", DEBUG="0")
    assert result.returncode != 0
    # one error, listing everything (not the first problem, then the next on the next deploy)
    assert result.stderr.count("ImproperlyConfigured:") == 1, result.stderr
    message = result.stderr[result.stderr.index("ImproperlyConfigured:"):]
    for expected in ("SECRET_KEY must be set", "ALLOWED_HOSTS", "DATABASE_URL is not set",
                     "CELERY_BROKER_URL is not set", "REDIS_URL is not set", "RAW_ARCHIVE_URL is not set",
                     "SNOWFLAKE_ACCOUNT is not set", "SNOWFLAKE_USER is not set", "No Snowflake credentials",
                     "SNOWFLAKE_PRIVATE_KEY_FILE", "SNOWFLAKE_PRIVATE_KEY ", "ARCHIVE_KMS_KEY_ID is not set",
                     "SUBJECT_HASH_SECRET must be set"):
        assert expected in message, f"{expected!r} not in:\n{message}"
    assert "11 problem(s)" in message


def test_production_refuses_every_embedded_value(production_env):
    embedded = {
        **production_env,
        "DATABASE_URL": "sqlite:////tmp/portal.sqlite3", "CELERY_BROKER_URL": "filesystem://", "REDIS_URL": "",
        "RAW_ARCHIVE_URL": "file:///app/var/raw-archive",
        "SNOWFLAKE_ACCOUNT": "fakesnow", "SNOWFLAKE_USER": "fake", "SNOWFLAKE_PASSWORD": "snow",
        "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": "8765", "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_PRIVATE_KEY_FILE": "",
    }
    result = manage("check", **embedded)
    assert result.returncode != 0
    message = result.stderr[result.stderr.index("ImproperlyConfigured:"):]
    for expected in ("DATABASE_URL is SQLite", "CELERY_BROKER_URL is filesystem://", "REDIS_URL is not set",
                     "RAW_ARCHIVE_URL must be s3://", "SNOWFLAKE_ACCOUNT is 'fakesnow'", "SNOWFLAKE_USER is 'fake'",
                     "SNOWFLAKE_PASSWORD is 'snow'", "SNOWFLAKE_HOST is 127.0.0.1", "SNOWFLAKE_PORT is 8765",
                     "SNOWFLAKE_PROTOCOL is http"):
        assert expected in message, f"{expected!r} not in:\n{message}"


def test_production_settings_pass_the_key_pair_and_the_workload_warehouses(production_env, key_file):
    result = settings_probe(PARAMS_PROBE, **production_env)
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout)

    merge = params["merge"]
    assert merge["warehouse"] == "CHATORBIT_MERGE_WH"
    assert merge["authenticator"] == "SNOWFLAKE_JWT"
    assert merge["private_key_file"] == str(key_file)
    assert merge["account"] == "myorg-chatorbit" and merge["user"] == "CHATORBIT_SVC"
    assert merge["role"] == "CHATORBIT_PIPELINE"
    assert "password" not in merge
    assert merge["session_parameters"]["QUERY_TAG"] == "chatorbit:merge"
    assert params["dashboards"]["warehouse"] == "CHATORBIT_BI_WH"
    # a workload without a warehouse of its own uses SNOWFLAKE_WAREHOUSE
    assert params["models"]["warehouse"] == params["ingest"]["warehouse"] == "CHATORBIT_WH"
    assert params["default"]["warehouse"] == "CHATORBIT_WH"
    for name, workload_params in params.items():
        # no embedded host/port/protocol: the connector derives <account>.snowflakecomputing.com over https
        assert not {"host", "port", "protocol"} & set(workload_params), (name, workload_params)


def test_an_unknown_workload_names_the_known_ones(production_env):
    result = settings_probe("""
        from warehouse.connection import warehouse_params
        try:
            warehouse_params(workload="reports")
        except ValueError as err:
            print(err)
    """, **production_env)
    assert result.returncode == 0, result.stderr
    assert "'reports'" in result.stdout
    for workload in ("ingest", "merge", "models", "dashboards"):
        assert workload in result.stdout


def test_a_password_alone_is_refused_unless_allowed(production_env):
    password_only = {**production_env, "SNOWFLAKE_PRIVATE_KEY_FILE": "", "SNOWFLAKE_PASSWORD": "s3cret-Passw0rd"}
    refused = manage("check", **password_only)
    assert refused.returncode != 0
    assert "SNOWFLAKE_PASSWORD alone is refused" in refused.stderr
    assert "SNOWFLAKE_ALLOW_PASSWORD=1" in refused.stderr

    allowed = settings_probe(PARAMS_PROBE, **password_only, SNOWFLAKE_ALLOW_PASSWORD="1")
    assert allowed.returncode == 0, allowed.stderr
    default = json.loads(allowed.stdout)["default"]
    assert default["password"] == "s3cret-Passw0rd"
    assert "authenticator" not in default and "private_key_file" not in default


def test_a_pem_key_in_the_environment_is_loaded_with_its_passphrase(production_env):
    key = rsa_key()
    text = pem(key, passphrase=b"correct horse").decode()
    env = {**production_env, "SNOWFLAKE_PRIVATE_KEY_FILE": "", "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE": "correct horse"}

    for variant in (text, text.replace("\n", "\\n")):  # as injected, or with its newlines escaped
        result = settings_probe(PARAMS_PROBE, **env, SNOWFLAKE_PRIVATE_KEY=variant)
        assert result.returncode == 0, result.stderr
        merge = json.loads(result.stdout)["merge"]
        assert merge["authenticator"] == "SNOWFLAKE_JWT"
        # handed to the connector decrypted, as DER (kept in memory only)
        assert merge["private_key"] == der_sha256(key)
        assert "private_key_file" not in merge and "password" not in merge


def test_a_pem_that_is_not_a_key_names_snowflake_private_key(production_env):
    not_a_key = ("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2hhdE9yYml0LW5vdC1hLWtleQ==\n"
                 "-----END CERTIFICATE-----\n")
    result = manage("check", **{**production_env, "SNOWFLAKE_PRIVATE_KEY_FILE": ""}, SNOWFLAKE_PRIVATE_KEY=not_a_key)
    assert result.returncode != 0
    assert "SNOWFLAKE_PRIVATE_KEY is not a readable PEM private key" in result.stderr
    assert "Q2hhdE9yYml0" not in result.stderr  # the variable's content is never shown
    assert "No Snowflake credentials" not in result.stderr


@pytest.mark.parametrize("case", ["missing file", "encrypted without passphrase", "wrong passphrase", "both"])
def test_an_unusable_key_file_is_named(production_env, tmp_path, case):
    env = dict(production_env)
    if case == "missing file":
        env["SNOWFLAKE_PRIVATE_KEY_FILE"] = str(tmp_path / "nowhere.p8")
        expected = "SNOWFLAKE_PRIVATE_KEY_FILE cannot be read"
    elif case == "both":
        env["SNOWFLAKE_PRIVATE_KEY"] = pem(rsa_key()).decode()
        expected = "SNOWFLAKE_PRIVATE_KEY_FILE and SNOWFLAKE_PRIVATE_KEY are both set"
    else:
        encrypted = tmp_path / "encrypted.p8"
        encrypted.write_bytes(pem(rsa_key(), passphrase=b"right"))
        env["SNOWFLAKE_PRIVATE_KEY_FILE"] = str(encrypted)
        if case == "wrong passphrase":
            env["SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = "wrong"
            expected = "or SNOWFLAKE_PRIVATE_KEY_PASSPHRASE is wrong"
        else:
            expected = "SNOWFLAKE_PRIVATE_KEY_FILE is an encrypted private key: set SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
    result = manage("check", **env)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_debug_keeps_the_embedded_defaults():
    result = settings_probe("""
        from django.conf import settings
        from warehouse.connection import warehouse_params
        print(json.dumps({"SNOWFLAKE": settings.SNOWFLAKE, "WAREHOUSES": settings.SNOWFLAKE_WAREHOUSES,
                          "archive": settings.RAW_ARCHIVE_URL, "broker": settings.CELERY_BROKER_URL,
                          "redis": settings.REDIS_URL, "engine": settings.DATABASES["default"]["ENGINE"],
                          "aws": settings.AWS_ENDPOINT_URL, "params": warehouse_params(workload="models")}))
    """, CHATORBIT_VAR_DIR="/tmp/chatorbit-var")
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["SNOWFLAKE"] == {
        "account": "fakesnow", "user": "fake", "password": "snow", "host": "127.0.0.1", "port": 8765,
        "protocol": "http", "database": "CHATORBIT", "warehouse": "", "role": "",
    }
    assert loaded["WAREHOUSES"] == {"ingest": "", "merge": "", "models": "", "dashboards": ""}
    assert loaded["archive"] == "file:///tmp/chatorbit-var/raw-archive"
    assert loaded["broker"] == "filesystem://" and loaded["redis"] == ""
    assert loaded["engine"] == "django.db.backends.sqlite3"
    assert loaded["aws"] == "http://127.0.0.1:4566"
    assert {k: loaded["params"][k] for k in ("host", "port", "protocol")} == {
        "host": "127.0.0.1", "port": 8765, "protocol": "http"}
    assert "warehouse" not in loaded["params"]


def test_a_key_pair_from_the_environment_signs_in_through_the_connector(warehouse_server, key_file):
    """env → settings → warehouse_params → the connector's key-pair (JWT) sign-in, against the
    embedded warehouse (which accepts any signed token)."""
    result = settings_probe("""
        from warehouse.connection import warehouse_connection
        with warehouse_connection(workload="models", login_timeout=60) as conn:  # a busy machine is slow
            row = conn.cursor().execute("SELECT 1 + 1").fetchone()
            print(json.dumps({"auth": type(conn.auth_class).__name__, "row": list(row)}))
    """, DEBUG="1", SNOWFLAKE_PORT=str(warehouse_server.port), SNOWFLAKE_PRIVATE_KEY_FILE=str(key_file),
        SNOWFLAKE_DATABASE="KEYPAIR_CHECK")
    assert result.returncode == 0, result.stderr + Path(warehouse_server.proc.log_path).read_text()[-2000:]
    assert json.loads(result.stdout) == {"auth": "AuthByKeyPair", "row": [2]}


# --- docker-compose.yml --------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_serves_every_queue_from_exactly_one_worker_service():
    from portal.celery import Queue

    served: dict[str, list[str]] = {}
    for name, service in compose()["services"].items():
        argv = str(service.get("command", "")).split()
        if argv[:4] == ["celery", "-A", "portal", "worker"]:
            for queue in argv[argv.index("-Q") + 1].split(","):
                served.setdefault(queue, []).append(name)
    assert set(served) == {queue.value for queue in Queue}
    assert all(len(services) == 1 for services in served.values()), served
    assert "--shard-consumer" in compose()["services"][served["ingest"][0]]["command"]
    assert len({services[0] for services in served.values()}) >= 4  # ingest, models, replay apart


def test_compose_environments_load_and_point_at_the_services():
    services = compose()["services"]
    envs = {name: {k: str(v) for k, v in service["environment"].items()}
            for name, service in services.items() if service.get("build") and service.get("environment")}
    assert {"portal", "worker-ingest", "worker-models", "beat", "aws", "migrate"} <= set(envs)
    for distinct in sorted({json.dumps(env, sort_keys=True) for env in envs.values()}):
        env = json.loads(distinct)
        result = settings_probe("""
            from django.conf import settings
            print(json.dumps({"snowflake": settings.SNOWFLAKE["host"], "aws": settings.AWS_ENDPOINT_URL,
                              "archive": settings.RAW_ARCHIVE_URL, "broker": settings.CELERY_BROKER_URL,
                              "engine": settings.DATABASES["default"]["ENGINE"]}))
        """, **env)
        assert result.returncode == 0, result.stderr
        loaded = json.loads(result.stdout)
        assert loaded["snowflake"] == "warehouse"
        assert loaded["aws"] in {"http://aws:4566", "http://0.0.0.0:4566"}
        assert loaded["archive"].startswith("s3://") and loaded["broker"].startswith("redis://")
        assert loaded["engine"] == "django.db.backends.postgresql"
    assert "--host 0.0.0.0 --port 8765" in services["warehouse"]["command"]
