"""The verification worker process: reads requests on stdin, answers verdicts on stdout.

Started by `pool.VerifierPool` as `python -m rstar_jax.rewards.worker`, never imported by the
parent's hot path. Protocol, one JSON object per line:
  worker -> parent, once imports are done: {"ready": true}
  parent -> worker: {"response": str, "answer": str, "scope": str, "strict_integer": bool,
                     "timeout_s": float (the verification's own deadline, `verifier.verify`)}
  worker -> parent: {"correct": bool, "candidate": str | null, "timed_out": bool}
                    or {"error": str}
The worker exits at end of input, and a watchdog thread ends it within a second of its parent's
death even during a long verification (one that holds the GIL in a single C call excepted: the
parent's kill covers that while the parent lives). Verifications run in the main thread, where
`verifier.verify` can set its SIGALRM deadline. Anything printed by the graders goes to stderr;
the protocol keeps a private copy of the original stdout.
"""
import argparse
import json
import os
import resource
import sys
import threading
import time

from rstar_jax.rewards import verifier


def _limit_memory(memory_limit_mb: int) -> None:
  if memory_limit_mb > 0:
    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exit_with_parent(parent_pid: int) -> None:
  while os.getppid() == parent_pid:
    time.sleep(1.0)
  os._exit(1)  # pylint: disable=protected-access  # no cleanup: the parent is gone


def _answer(line: str) -> dict:
  try:
    request = json.loads(line)
    verdict = verifier.verify(request["response"], request["answer"], request["scope"],
                              request["strict_integer"], request["timeout_s"])
    return {"correct": verdict.correct, "candidate": verdict.candidate,
            "timed_out": verdict.timed_out}
  except MemoryError:
    return {"error": "memory limit reached"}
  except Exception as e:  # pylint: disable=broad-except  # reported to the parent as a value
    return {"error": f"{type(e).__name__}: {e}"}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--memory_limit_mb", type=int, default=0,
                      help="address-space limit (RLIMIT_AS) set after imports; 0: none")
  args = parser.parse_args(argv)
  protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
  os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
  threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
  verifier.quiet_math_verify_logs()
  _limit_memory(args.memory_limit_mb)
  protocol.write(json.dumps({"ready": True}) + "\n")
  protocol.flush()
  for line in sys.stdin:
    protocol.write(json.dumps(_answer(line)) + "\n")
    protocol.flush()


if __name__ == "__main__":
  main()
