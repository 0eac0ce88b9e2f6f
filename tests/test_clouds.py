"""Claude on Bedrock and Vertex, end to end against a loopback stand-in that checks what the
clouds check: botocore's own SigV4 verification, a google-auth bearer token, body shapes,
and their real error answers, throttling included."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
from cloud_server import ACCESS_KEY, ACCESS_TOKEN, REGION, SECRET_KEY, CloudServer
from conftest import read_jsonl, run_cli, write_jsonl

from apiproc.providers import Verdict
from apiproc.providers.bedrock import classify_bedrock
from apiproc.providers.vertex import VertexProvider, vertex_base_url

HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
PROFILE = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us." + HAIKU
VERTEX_MODEL = "claude-sonnet-4-5@20250929"
PROJECT = "apiproc-test-project"
FAST = ("--max-requests-per-minute", "600", "--retry-base-delay", "0.05")


def line(n: int, model: str = HAIKU) -> dict:
    return {
        "model": model,
        "max_tokens": 32,
        "messages": [{"role": "user", "content": f"Say something about the number {n}."}],
    }


def aws_env(tmp_path: Path, secret: str = SECRET_KEY) -> dict[str, str]:
    """Credentials from the environment, and nothing else of the chain within reach."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": "",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_BEARER_TOKEN_BEDROCK": "",
    }


def google_env(tmp_path: Path, cloud: CloudServer) -> dict[str, str]:
    """A service-account key whose token endpoint is the stand-in's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "apiproc-test@apiproc-test-project.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": cloud.url + "/token",
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(key))
    return {"GOOGLE_APPLICATION_CREDENTIALS": str(path), "ANTHROPIC_VERTEX_PROJECT_ID": ""}


def run_bedrock(cloud: CloudServer, source: Path, output: Path, env: dict, *extra: str):
    return run_cli(
        "run", str(source), "-o", str(output), "--api", "bedrock", "--region", REGION,
        "--request-url", cloud.url, *FAST, *extra, env=env,
    )  # fmt: skip


def run_vertex(cloud: CloudServer, source: Path, output: Path, env: dict, *extra: str):
    return run_cli(
        "run", str(source), "-o", str(output), "--api", "vertex", "--region", "us-east5",
        "--request-url", cloud.url + "/v1", *FAST, *extra, env=env,
    )  # fmt: skip


# ---- Bedrock InvokeModel ------------------------------------------------------------------


def test_bedrock_requests_verify_with_botocore_sigv4_and_throttling_is_retried(
    tmp_path: Path,
) -> None:
    rows = [line(n) for n in range(5)] + [line(5, model=PROFILE)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    with CloudServer(answers=["throttle", "throttle"]) as cloud:
        done = run_bedrock(cloud, source, tmp_path / "out.jsonl", aws_env(tmp_path))
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["result"]["type"] for r in records] == ["succeeded"] * 6
    assert sorted(r["attempts"] for r in records) == [1, 1, 1, 1, 2, 2]
    assert all(r["result"]["message"]["type"] == "message" for r in records)
    assert [s.status for s in cloud.seen].count(429) == 2
    assert len(cloud.seen) == 8
    assert all(seen.signature_ok for seen in cloud.seen)
    for seen in cloud.seen:
        assert seen.headers["authorization"].startswith(
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"
        )
        assert "/us-east-1/bedrock/aws4_request" in seen.headers["authorization"]
        assert seen.body["anthropic_version"] == "bedrock-2023-05-31"
        assert "model" not in seen.body and "stream" not in seen.body
    paths = {seen.path for seen in cloud.seen}
    assert f"/model/{HAIKU}/invoke" in paths
    assert f"/model/{quote(PROFILE, safe=':')}/invoke" in paths  # the ARN's "/" escaped


def test_a_signature_made_with_the_wrong_secret_is_refused_and_stops_the_run(
    tmp_path: Path,
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n) for n in range(3)])
    with CloudServer() as cloud:
        env = aws_env(tmp_path, secret="not-the-secret-the-server-knows")
        done = run_bedrock(cloud, source, tmp_path / "out.jsonl", env)
    assert done.returncode == 3, done.stderr
    assert "InvalidSignatureException" in done.stderr
    assert cloud.seen and not any(seen.signature_ok for seen in cloud.seen)


def test_model_not_ready_and_unavailable_are_retried_validation_is_not(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n) for n in range(4)])
    answers = ["not_ready", "unavailable", "validation"]
    with CloudServer(answers=answers) as cloud:
        done = run_bedrock(
            cloud, source, tmp_path / "out.jsonl", aws_env(tmp_path), "--max-concurrency", "1"
        )
    assert done.returncode == 1, done.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    errored = [r for r in records.values() if r["result"]["type"] == "errored"]
    assert len(errored) == 1 and errored[0]["attempts"] == 1
    assert errored[0]["result"]["error"]["error"]["type"] == "ValidationException"
    assert sum(r["result"]["type"] == "succeeded" for r in records.values()) == 3


def test_bedrock_access_denied_stops_the_run(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n) for n in range(3)])
    with CloudServer(answers=["access_denied"]) as cloud:
        done = run_bedrock(
            cloud, source, tmp_path / "out.jsonl", aws_env(tmp_path), "--max-concurrency", "1"
        )
    assert done.returncode == 3
    assert "AccessDeniedException" in done.stderr


# ---- Bedrock Messages API (bedrock-mantle) --------------------------------------------


def test_mantle_takes_the_messages_body_signed_for_bedrock_mantle(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n) for n in range(3)])
    with CloudServer(answers=["throttle"]) as cloud:
        done = run_cli(
            "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--api", "bedrock-mantle",
            "--region", REGION, "--request-url", cloud.url + "/anthropic", *FAST,
            env=aws_env(tmp_path),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(cloud.seen) == 4 and all(seen.signature_ok for seen in cloud.seen)
    for seen in cloud.seen:
        assert "/us-east-1/bedrock-mantle/aws4_request" in seen.headers["authorization"]
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert seen.body["model"] == HAIKU and "anthropic_version" not in seen.body


def test_mantle_sends_a_bedrock_api_key_as_bearer(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(1)])
    with CloudServer() as cloud:
        env = {**aws_env(tmp_path), "AWS_BEARER_TOKEN_BEDROCK": "bedrock-api-key-for-tests"}
        done = run_cli(
            "run", str(source), "-o", str(tmp_path / "out.jsonl"), "--api", "bedrock-mantle",
            "--region", REGION, "--request-url", cloud.url + "/anthropic", *FAST, env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cloud.seen[0].headers["authorization"] == "Bearer bedrock-api-key-for-tests"
    assert "bedrock-api-key-for-tests" not in done.stderr


# ---- Vertex ---------------------------------------------------------------------------


def test_vertex_requests_carry_the_google_auth_token_and_quota_errors_are_retried(
    tmp_path: Path,
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n, VERTEX_MODEL) for n in range(4)])
    with CloudServer(answers=["quota", "unavailable"]) as cloud:
        done = run_vertex(cloud, source, tmp_path / "out.jsonl", google_env(tmp_path, cloud))
    assert done.returncode == 0, done.stderr
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["result"]["type"] for r in records] == ["succeeded"] * 4
    assert sorted(r["attempts"] for r in records) == [1, 1, 2, 2]
    assert cloud.tokens_issued >= 1
    assert len(cloud.seen) == 6
    expected = (
        f"/v1/projects/{PROJECT}/locations/us-east5/publishers/anthropic/models/"
        f"{VERTEX_MODEL}:rawPredict"
    )
    for seen in cloud.seen:
        assert seen.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert seen.path == expected  # the project came from the key file
        assert seen.body["anthropic_version"] == "vertex-2023-10-16"
        assert "model" not in seen.body
    assert ACCESS_TOKEN not in done.stderr


def test_vertex_permission_denied_stops_the_run(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(n, VERTEX_MODEL) for n in range(3)])
    with CloudServer(answers=["access_denied"]) as cloud:
        env = google_env(tmp_path, cloud)
        done = run_vertex(cloud, source, tmp_path / "out.jsonl", env, "--max-concurrency", "1")
    assert done.returncode == 3
    assert "PERMISSION_DENIED" in done.stderr


def test_vertex_base_urls_follow_the_region_as_the_sdk_does() -> None:
    assert vertex_base_url("global") == "https://aiplatform.googleapis.com/v1"
    assert vertex_base_url("us") == "https://aiplatform.us.rep.googleapis.com/v1"
    assert vertex_base_url("eu") == "https://aiplatform.eu.rep.googleapis.com/v1"
    assert vertex_base_url("us-east5") == "https://us-east5-aiplatform.googleapis.com/v1"


# ---- answers, unit by unit --------------------------------------------------------------


def aws_error(kind: str, status: int) -> tuple[int, dict, bytes]:
    headers = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    return status, headers, json.dumps({"message": "never consulted"}).encode()


@pytest.mark.parametrize(
    ("kind", "status", "verdict", "rate_limited"),
    [
        ("ThrottlingException", 429, Verdict.RETRY, True),
        ("ModelNotReadyException", 429, Verdict.RETRY, False),
        ("ServiceUnavailableException", 503, Verdict.RETRY, False),
        ("InternalServerException", 500, Verdict.RETRY, False),
        ("ModelTimeoutException", 408, Verdict.RETRY, False),
        ("ValidationException", 400, Verdict.PERMANENT, False),
        ("ServiceQuotaExceededException", 400, Verdict.PERMANENT, False),
        ("ResourceNotFoundException", 404, Verdict.PERMANENT, False),
        ("AccessDeniedException", 403, Verdict.FATAL, False),
        ("UnrecognizedClientException", 403, Verdict.FATAL, False),
    ],
)
def test_bedrock_exceptions_are_classified_by_name(
    kind: str, status: int, verdict: Verdict, rate_limited: bool
) -> None:
    outcome = classify_bedrock(*aws_error(kind, status))
    assert outcome.verdict is verdict
    assert outcome.rate_limited is rate_limited
    assert outcome.error == {"type": kind, "message": "never consulted"}


def test_bedrock_usage_is_read_from_the_body() -> None:
    body = {"type": "message", "content": [], "usage": {"input_tokens": 12, "output_tokens": 3}}
    outcome = classify_bedrock(200, {"x-amzn-requestid": "abc"}, json.dumps(body).encode())
    assert outcome.verdict is Verdict.SUCCESS
    assert outcome.usage is not None and outcome.usage.input_tokens == 12
    assert outcome.request_id == "abc"


@pytest.mark.parametrize(
    ("status", "body", "verdict", "rate_limited"),
    [
        (429, [{"error": {"code": 429, "message": "Quota", "status": "RESOURCE_EXHAUSTED"}}],
         Verdict.RETRY, True),
        (503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}},
         Verdict.RETRY, False),
        (403, {"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}},
         Verdict.FATAL, False),
        (400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}},
         Verdict.PERMANENT, False),
        (429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
         Verdict.RETRY, True),
        (529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
         Verdict.RETRY, False),
    ],
)  # fmt: skip
def test_vertex_answers_in_either_shape_are_classified(
    status: int, body: object, verdict: Verdict, rate_limited: bool
) -> None:
    provider = VertexProvider(PROJECT, "global", tokens=_Token())
    outcome = provider.classify(status, {}, json.dumps(body).encode())
    assert outcome.verdict is verdict
    assert outcome.rate_limited is rate_limited


class _Token:
    def token(self) -> str:
        return "t"


# ---- what a user is told ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "extra", "library"),
    [("bedrock", "bedrock", "botocore"), ("vertex", "vertex", "google")],
)
def test_a_cloud_api_without_its_extra_names_the_install_command(
    tmp_path: Path, api: str, extra: str, library: str
) -> None:
    blocked = tmp_path / "blocked" / library
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed')\n")
    source = write_jsonl(tmp_path / "in.jsonl", [line(1)])
    env = {
        **aws_env(tmp_path),
        "PYTHONPATH": str(tmp_path / "blocked"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"),
    }
    done = run_cli(
        "run", str(source), "--api", api, "--region", "us-east-1", "--project", "p",
        "-o", str(tmp_path / "out.jsonl"), env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"pip install 'apiproc[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_cloud_api_without_a_region_says_how_to_give_one(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(1)])
    env = {**aws_env(tmp_path), "AWS_REGION": "", "AWS_DEFAULT_REGION": ""}
    done = run_cli("run", str(source), "--api", "bedrock", "-o", str(tmp_path / "o.jsonl"), env=env)
    assert done.returncode == 2
    assert "--api bedrock needs a region: pass --region" in done.stderr


def test_cloud_models_keep_the_claude_tokenizer_and_cache_rules_but_not_its_price() -> None:
    from apiproc.providers.anthropic_models import model_facts
    from apiproc.providers.cloud_models import bedrock_facts, vertex_facts

    claude = model_facts("claude-opus-4-7")
    for facts in (
        bedrock_facts("us.anthropic.claude-opus-4-7-v1:0"),
        vertex_facts("claude-opus-4-7"),
    ):
        assert facts.token_ratio == claude.token_ratio
        assert facts.min_cacheable_tokens == claude.min_cacheable_tokens
        assert facts.price is None and claude.price is not None
    assert bedrock_facts(PROFILE).limit_class == PROFILE
    assert vertex_facts(VERTEX_MODEL).limit_class == "claude-sonnet-4-5"


def test_only_the_messages_api_streams(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [line(1)])
    done = run_cli(
        "run", str(source), "--api", "openai", "--simulate", "--transport", "stream",
        "-o", str(tmp_path / "o.jsonl"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "--transport stream" in done.stderr and "Traceback" not in done.stderr


def test_each_provider_says_which_errors_a_rerun_may_fix() -> None:
    from apiproc.providers.bedrock import transient_error
    from apiproc.providers.openai import OpenAIProvider

    openai_provider = OpenAIProvider(api_key="k")
    assert openai_provider.transient_error("tokens") and openai_provider.transient_error("requests")
    assert not openai_provider.transient_error("invalid_request_error")
    assert transient_error("ThrottlingException") and transient_error("overloaded_error")
    assert not transient_error("ValidationException")
    vertex = VertexProvider(PROJECT, "global", tokens=_Token())
    assert vertex.transient_error("RESOURCE_EXHAUSTED")
    assert not vertex.transient_error("PERMISSION_DENIED")
