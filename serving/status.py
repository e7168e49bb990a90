"""What a model repository serves and how its server is doing: the report behind `dnc status`.

It reads three things and changes none: the repository's description (repository.json: models, tasks,
runtimes, class lists), the record `dnc serve` keeps beside it (the state file: pids, addresses, when the
server started), and the server itself over gRPC (Triton's live/ready endpoints, each model's readiness,
and the class list its entry model answers with now: the blank probe `dnc swap` uses). The served set id
is compared with the one repository.json records, since they differ only while a swap settles or when
--url is not the server of this repository. Every call to the server has a short deadline, so a server
that hangs is reported as not answering instead of being waited for.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dnc.core import tasks
from dnc.core.errors import InputError
from dnc.serving import repository
from dnc.serving.state import FLEET, STATE_FILE, read_state, server_alive, servers_of, supervisor_alive
from dnc.serving.swap import Probe, SwapError

log = logging.getLogger(__name__)



def status(repo: str | Path, url: str | None = None, timeout: float = 5.0) -> dict:
    """The report of `repo`: {"repo", "models": {name: description}, "server": the record of `dnc serve`
    or None, "health": what the server at `url` (default: the recorded gRPC address) answers, or None when
    nothing is served, "problems": sentences, "healthy": no problem}. A missing folder, or one that is
    not a DNC repository, is an InputError naming the fix."""
    repo = Path(repo)
    if not repo.exists():
        raise InputError(f"`repo` {repo} does not exist: give the folder `dnc repo build` wrote")
    if not repo.is_dir():
        raise InputError(f"`repo` {repo} is a file, not a model repository folder")
    info = repository.read_info(repo)
    report = {"repo": str(repo.resolve()), "models": {n: _model(m) for n, m in sorted(info["models"].items())},
              "server": _server(repo), "health": None, "problems": []}
    server, problems = report["server"], report["problems"]
    if server is not None and not server["running"] and url is None:
        problems.append(f"the server recorded in {repo / STATE_FILE} (pid {server['pid']}, gRPC {server['grpc']}) "
                        f"is not running: `dnc stop` (`repo` {repo}) clears the record, `dnc serve` (`repo` {repo}, "
                        "`detach`) starts a server")
    target = url or (server["grpc"] if server is not None and server["running"] else None)
    if target:
        report["health"] = _health(target, info["models"], timeout)
        problems += _problems(repo, report, server if url is None else None)
        if url is None and server.get("replicas"):
            report["health"]["replicas"] = [_replica(r, info["models"], timeout) for r in server["replicas"]]
            problems += _replica_problems(report)
    report["healthy"] = not problems
    return report


def _model(m: dict) -> dict:
    s = m["set"]
    return {"task": tasks.of(m).name, "runtime": m.get("runtime"), "set_id": s["set_id"],
            "num_classes": s["num_classes"], "class_names": list(s["class_names"]), "anchored": bool(s.get("anchored")),
            "embed_fingerprint": m["embed_fingerprint"], "dim": m.get("dim"), "swaps": len(m.get("swaps", []))}


def _server(repo: Path) -> dict | None:
    """The record of `dnc serve` on `repo` and whether what it names still runs; None when there is none."""
    path = repo / STATE_FILE
    try:
        state = read_state(repo)
        if state is None:
            return None
        sup, srv = supervisor_alive(state), server_alive(state)
        started = state.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(path.stat().st_mtime))
    except (OSError, ValueError, KeyError, TypeError) as e:  # (damaged JSON is a ValueError)
        raise InputError(f"{path} is not a readable record of `dnc serve` ({type(e).__name__}: {e}); if no server "
                         f"runs on {repo}, remove it") from None
    out = {"pid": state.get("pid"), "supervisor": state.get("supervisor"), "http": state.get("http"),
           "grpc": state.get("grpc"), "metrics": state.get("metrics"), "log": state.get("log"),
           "restarts": state.get("restarts", 0), "started": started, "supervisor_running": sup,
           "server_running": srv, "running": sup or srv}
    if state.get("kind") == FLEET:  # one line per replica: its addresses and log
        out["replicas"] = [{k: r.get(k) for k in ("name", "pid", "http", "grpc", "metrics", "log", "restarts")}
                           for r in servers_of(state)]
    return out


def _replica(rec: dict, models: dict, timeout: float) -> dict:
    """One replica of a fleet, asked directly: whether it answers, and the class list each model answers with."""
    got = _health(rec["grpc"], models, timeout)
    ids = {name: m["set_id"] for name, m in got["models"].items()}
    return {"name": rec.get("name"), "grpc": rec["grpc"], "answering": got["answering"], "set_ids": ids,
            "set_id": next(iter(ids.values()), None), "error": got["error"]}


def _replica_problems(report: dict) -> list[str]:
    out = []
    for r in report["health"]["replicas"]:
        if not r["answering"]:
            out.append(f"replica {r['name']} does not answer at {r['grpc']} ({r['error']}): down or restarting "
                       "(its supervisor restarts it; see its log in the fleet's run folder)")
            continue
        for name, m in report["models"].items():
            if r["set_ids"].get(name) != m["set_id"]:
                out.append(f"replica {r['name']} answers {name} with class list {r['set_ids'].get(name)}, not "
                           f"{m['set_id']}: a swap is settling (replicas poll the repository every second; ask "
                           "again in a few seconds); if it lasts, that replica cannot load the repository's head "
                           "(see its log)")
    return out


def _health(url: str, models: dict, timeout: float) -> dict:
    """What the server at `url` (gRPC) answers: live, ready, and per model ready and the set id answering."""
    import tritonclient.grpc as grpc

    out = {"url": url, "answering": False, "live": False, "ready": False, "models": {}, "error": None}
    try:
        client = grpc.InferenceServerClient(url)
    except Exception as e:  # a malformed address
        out["error"] = f"cannot use {url}: {_first_line(e)} (give the gRPC HOST:PORT)"
        return out
    try:
        try:
            out["live"] = bool(client.is_server_live(client_timeout=timeout))
        except Exception as e:  # refused, timed out, or not a gRPC endpoint
            out["error"] = f"{_first_line(e)} (is it the gRPC address? default port 8001)"
            return out
        out["answering"] = True
        out["ready"] = bool(_quietly(lambda: client.is_server_ready(client_timeout=timeout)))
        for name, m in sorted(models.items()):
            entry = m.get("models", {}).get("entry", name)
            ready = bool(_quietly(lambda e=entry: client.is_model_ready(e, client_timeout=timeout)))
            served, error = None, None
            if ready:
                try:
                    served = Probe(url, name, m["preprocessing"]).set_id(timeout)
                except SwapError as e:  # the probe was refused or timed out
                    error = str(e)
            out["models"][name] = {"ready": ready, "set_id": served, "error": error}
    finally:
        client.close()
    return out


def _problems(repo: Path, report: dict, recorded: dict | None) -> list[str]:
    """Sentences naming what is not healthy in the server's answers, each with where to look."""
    health = report["health"]
    where = f"; see its log {recorded['log']}" if recorded and recorded.get("log") else ""
    if not health["answering"]:
        if recorded:
            return [f"the server `dnc serve` recorded for {repo} (pid {recorded['pid']}) runs but does not answer "
                    f"at {health['url']}: {health['error']}{where}"]
        return [f"no server answers at {health['url']}: {health['error']}"]
    out = []
    if not health["live"]:
        out.append(f"the server at {health['url']} is not live{where}")
    if not health["ready"]:
        out.append(f"the server at {health['url']} is not ready (a model is loading or failed to load){where}")
    for name, m in report["models"].items():
        got = health["models"].get(name, {})
        if not got.get("ready"):
            out.append(f"model {name} is not ready at {health['url']} (loading, or it failed to load){where}")
        elif got.get("error"):
            out.append(f"model {name} is ready but does not answer: {got['error']}")
        elif got["set_id"] != m["set_id"]:
            out.append(f"model {name} answers with class list {got['set_id']}, but {repo}/{repository.INFO_FILE} "
                       f"records {m['set_id']}: a swap is settling or was interrupted (`dnc swap` settles it), or "
                       "the server is not the one of this repository")
    return out


def render(report: dict) -> str:
    """The report as text, one block per model, then the server and its health."""
    lines = [f"repository {report['repo']}: {len(report['models'])} model(s)"]
    health = report["health"]
    for name, m in report["models"].items():
        anchored = "anchored to exemplars" if m["anchored"] else "not anchored"
        lines.append(f"  {name}: {tasks.task(m['task']).noun}, {m['runtime']} runtime, embedding "
                     f"{short_fingerprint(m['embed_fingerprint'])} (D={m['dim']})")
        lines.append(f"    class list {m['set_id']}: {m['num_classes']} classes, {anchored}: "
                     f"{abbreviate(m['class_names'])}")
        if health is not None and health["answering"]:
            got = health["models"].get(name, {})
            now = ("not ready" if not got.get("ready") else f"ready, answering with {got['set_id']}"
                   if got.get("set_id") else f"ready, not answering ({got.get('error')})")
            if got.get("set_id") and got["set_id"] != m["set_id"]:
                now += f" (repository.json records {m['set_id']})"
            lines.append(f"    served: {now}")
    s = report["server"]
    if s is None:
        start = f"`dnc serve` (`repo` {report['repo']}, `detach`) starts one"
        lines.append(f"server: none recorded ({start})" if health is None else "server: none recorded by `dnc serve`")
    else:
        run = "running" if s["running"] else "not running"
        lines.append(f"server: {run}, pid {s['pid']} (supervisor {s['supervisor']}), started {s['started']}, "
                     f"{s['restarts']} restart(s)")
        lines.append(f"  HTTP {s['http']}, gRPC {s['grpc']}, metrics {s['metrics']}; log {s['log']}")
        answers = {r["name"]: r for r in (health or {}).get("replicas", [])}
        for r in s.get("replicas", []):
            now = answers.get(r["name"], {})
            said = (f"answering with {now['set_id']}" if now.get("answering") else "not answering") if now else ""
            lines.append(f"  {r['name']}: pid {r['pid']}, gRPC {r['grpc']}, {r['restarts']} restart(s); {said}")
    if health is None:
        lines.append("health: not served" if s is None or s["running"] else "health: down (the recorded server is "
                     "not running)")
    elif not health["answering"]:
        lines.append(f"health: not answering at {health['url']}")
    else:
        lines.append(f"health: {'live' if health['live'] else 'not live'}, "
                     f"{'ready' if health['ready'] else 'not ready'} (gRPC {health['url']})")
    lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def short_fingerprint(fp: str) -> str:
    """sha256:0123456789ab - enough to tell embeddings apart by eye."""
    algo, _, digest = fp.partition(":")
    return f"{algo}:{digest[:12]}" if digest else fp[:19]


def abbreviate(names: list[str], width: int = 100) -> str:
    """Class names joined; beyond `width` characters, the first ones and the count of those left out."""
    if len(", ".join(names)) <= width:
        return ", ".join(names)
    shown: list[str] = []
    for n in names:
        if shown and len(", ".join(shown + [n])) > width - 20:  # (room for the count)
            break
        shown.append(n)
    return ", ".join(shown) + f", ... (+{len(names) - len(shown)} more)"


def _quietly(call):
    try:
        return call()
    except Exception as e:  # reported as not ready
        log.debug("health call failed: %s", _first_line(e))
        return False


def _first_line(e: Exception) -> str:
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__

