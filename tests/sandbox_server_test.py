"""The HTTP service: Code Judge's routes and JSON, error answers, health, status, metrics.

Runs a real `rstar-sandbox serve` on a loopback port.
  python -m pytest -q tests/sandbox_server_test.py
"""
import asyncio
import json
import pathlib
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from rstar_jax.sandbox import client as client_lib
from rstar_jax.sandbox import processes


@pytest.fixture(scope="module")
def url():
  process, url = processes.start_service(["--workers", "1", "--timeout-s", "1",
                                          "--max-body-mib", "1"])
  yield url
  process.stop()


def _request(url: str, path: str, body=None, method=None, headers=None) -> tuple[int, str, bytes]:
  data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
  request = urllib.request.Request(url + path, data=data, method=method,
                                   headers={"Content-Type": "application/json", **(headers or {})})
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      return response.status, response.headers.get_content_type(), response.read()
  except urllib.error.HTTPError as e:
    return e.code, e.headers.get_content_type(), e.read()


def _json(url, path, body=None, method=None, headers=None):
  status, content_type, raw = _request(url, path, body, method, headers)
  assert content_type == "application/json", (status, raw)
  return status, json.loads(raw)


def test_run_answers_code_judge_body(url):
  status, body = _json(url, "/run", {"sub_id": "s1", "type": "python",
                                     "solution": "print(input() + '!')", "input": "hi",
                                     "expected_output": "hi!\n"})
  assert status == 200
  assert list(body)[:7] == ["sub_id", "success", "run_success", "cost", "stdout", "stderr",
                            "reason"]
  assert (body["sub_id"], body["success"], body["run_success"], body["stdout"], body["stderr"],
          body["reason"], body["status"], body["exit_code"]) == ("s1", True, True, "hi!\n", "",
                                                                  "", "ok", 0)
  assert isinstance(body["cost"], float)


def test_judge_drops_the_output(url):
  status, body = _json(url, "/judge", {"type": "python", "solution": "print(2)",
                                       "expected_output": "3"})
  assert status == 200
  assert "stdout" not in body and "stderr" not in body
  assert (body["success"], body["run_success"]) == (False, True)


@pytest.mark.parametrize("route", ["/run/batch", "/run/long-batch", "/judge/batch",
                                   "/judge/long-batch"])
def test_batches_answer_in_order(url, route):
  submissions = [{"type": "python", "solution": f"import time\ntime.sleep({0.05 * (3 - i)})\n"
                                                f"print({i})", "expected_output": str(i)}
                 for i in range(4)]
  status, body = _json(url, route, {"sub_id": "b", "type": "batch", "submissions": submissions})
  assert status == 200 and body["sub_id"] == "b"
  assert [r["success"] for r in body["results"]] == [True] * 4
  if route.startswith("/run"):
    assert [r["stdout"] for r in body["results"]] == [f"{i}\n" for i in range(4)]


def test_ping_status_health(url):
  assert _json(url, "/ping") == (200, "pong")
  assert _json(url, "/status") == (200, {"queue": 0, "num_workers": 1})
  status, health = _json(url, "/health")
  assert status == 200 and health["status"] == "ok" and health["workers_alive"] == 1


@pytest.mark.parametrize("path, body, status, detail_type", [
    ("/run", b"{not json", 422, "json_invalid"),
    ("/run", {"type": "python"}, 422, "missing"),
    ("/run/batch", {"submissions": []}, 422, "too_short"),
    ("/run", {"type": "cpp", "solution": "int main(){}"}, 400, None),
    ("/run/long-batch", {"submissions": [{"type": "python", "solution": "1"},
                                         {"type": "math", "solution": "1"}]}, 400, None),
])
def test_malformed_requests_get_4xx_json(url, path, body, status, detail_type):
  got, answer = _json(url, path, body)
  assert got == status
  if detail_type:
    assert answer["detail"][0]["type"] == detail_type
  else:
    assert "not supported" in answer["detail"]


def test_unknown_route_wrong_method_and_big_body_get_json(url):
  assert _json(url, "/nope") == (404, {"detail": "Not Found"})
  assert _json(url, "/run", method="GET") == (405, {"detail": "Method Not Allowed"})
  big = {"type": "python", "solution": "#" * (2 << 20)}
  status, answer = _json(url, "/run", big)
  assert status == 413 and "detail" in answer


def test_service_keeps_serving_after_malformed_requests(url):
  for _ in range(20):
    _request(url, "/run", b"\xff\xfe garbage")
  status, body = _json(url, "/run", {"type": "python", "solution": "print('still here')"})
  assert (status, body["stdout"]) == (200, "still here\n")


def test_metrics_count_requests_and_statuses(url):
  _json(url, "/run", {"type": "python", "solution": "1/0"})
  status, content_type, raw = _request(url, "/metrics")
  text = raw.decode()
  assert (status, content_type) == (200, "text/plain")
  assert 'sandbox_submissions_total{status="runtime_error"}' in text
  assert 'sandbox_requests_total{code="422",route="/run"}' in text
  assert "sandbox_request_duration_seconds_bucket" in text
  assert "sandbox_workers_alive 1" in text


# Every pool flag with a valid value (cli.POOL_FLAGS, in that order).
_POOL_ARGS = ["--workers", "1", "--jobs-per-worker", "2", "--runnable-per-worker", "1",
              "--timeout-s", "1", "--cpu-s", "1", "--memory-mib", "100", "--output-kib", "10", "--preload", "",
              "--no-warmup", "--uid-base", "3000000"]
_REDIS = ["--redis", "redis://127.0.0.1:1/0"]


@pytest.mark.parametrize("args, message", [
    (["serve", "--workers", "0"], "PoolConfig.workers must be > 0, got 0"),
    (["serve", "--timeout-s", "-1"], "Limits.timeout_s must be > 0"),
    (["serve", "--cpu-s", "0"], "Limits.cpu_s must be > 0"),
    (["serve", "--preload", "numpy,os.path/x"],
     "PoolConfig.preload: 'os.path/x' is not a module name"),
    (["worker"], "the following arguments are required: --redis"),
    (["worker", *_REDIS, "--lease-s", "0"], "--lease-s must be > 0, got 0.0"),
    (["worker", *_REDIS, "--max-body-mib", "2"], "unrecognized arguments: --max-body-mib"),
    (["serve", *_REDIS, "--workers", "2"], "with --redis the front end runs no snippets: "
                                           "--workers belongs to `rstar-sandbox worker`"),
    (["serve", *_REDIS, *_POOL_ARGS], "with --redis the front end runs no snippets: --workers, "
     "--jobs-per-worker, --runnable-per-worker, --timeout-s, --cpu-s, --memory-mib, --output-kib, "
     "--preload, --no-warmup, --uid-base belong to `rstar-sandbox worker`"),
    (["serve", "--lease-s", "5", "--queue", "q"], "--queue, --lease-s apply only with --redis"),
    (["serve", "--host", "0.0.0.0"], "--host 0.0.0.0 listens beyond loopback and the service runs anyone's "
                                     "code: give --api-key-file, or --trusted-network"),
    (["serve", "--api-key-file", "/nonexistent/key"], "--api-key-file /nonexistent/key: No such file"),
], ids=["workers", "timeout", "cpu", "preload", "worker_needs_redis", "lease", "worker_http_flag",
        "front_one_pool_flag", "front_every_pool_flag", "queue_flags_without_redis", "open_host_without_key",
        "missing_key_file"])
def test_cli_rejects_flags_that_do_nothing_or_are_bad(args, message):
  run = subprocess.run([sys.executable, "-m", "rstar_jax.sandbox.cli", *args],
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 2 and f"error: {message}" in run.stderr, run.stderr


def test_console_script_is_installed():
  script = pathlib.Path(sys.executable).with_name("rstar-sandbox")
  run = subprocess.run([str(script), "serve", "--help"], capture_output=True, text=True,
                       timeout=60)
  assert run.returncode == 0 and "--workers" in run.stdout and "--redis" in run.stdout


def test_an_api_key_guards_every_route_but_the_probes(tmp_path):
  key_file = tmp_path / "key"
  key_file.write_text("s3cret-key\n")
  process, url = processes.start_service(["--workers", "1", "--no-warmup", "--api-key-file", str(key_file)])
  try:
    body = {"type": "python", "solution": "print(6 * 7)"}
    assert _json(url, "/run", body)[0] == 401
    status, answer = _json(url, "/run", body, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "API key" in answer["detail"]
    status, answer = _json(url, "/run", body, headers={"Authorization": "Bearer s3cret-key"})
    assert status == 200 and answer["stdout"] == "42\n"
    assert _json(url, "/status")[0] == 401 and _json(url, "/ping")[0] == 200 and _json(url, "/health")[0] == 200

    async def with_client(api_key):
      async with client_lib.SandboxClient(url, api_key=api_key, max_attempts=3, backoff_s=0.0) as client:
        return await client.run("print(1 + 1)")

    assert asyncio.run(with_client("s3cret-key")).stdout == "2\n"
    with pytest.raises(client_lib.SandboxUnavailableError, match=r"refused the request \(401\): a wrong API key"):
      asyncio.run(with_client("nope"))
  finally:
    process.stop()
