#!/usr/bin/env python3
"""Checks the shape rules of the codebase that a compiler does not:

1. no module imports another module of its crate that imports it back (directly or
   through a longer cycle); a module and its own submodules may use each other;
2. nothing outside the one place that serializes it reads the node status (`/v1/cluster`)
   by string index: clients use `tally_protocol::NodeStatus`;
3. no code or doc points outside the repository (to files the repository does not hold).

Run from anywhere: `python3 scripts/check_shape.py`. Exits 1 listing every violation.
"""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SKIP_DIRS = {"target", ".git", "node_modules"}


def rust_files():
    for base, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for f in files:
            if f.endswith(".rs"):
                yield os.path.join(base, f)


def crate_roots():
    """(crate dir, src dir, root files) for every crate of the workspace."""
    roots = []
    for base, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        if "Cargo.toml" in files:
            src = os.path.join(base, "src")
            if os.path.isdir(src):
                roots.append(src)
    return roots


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return ()
    if len(rel) == 1 and rel[0] in ("lib", "main"):
        return ()
    return tuple(rel)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def expand_use(body):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d'] (roughly; enough for paths)."""
    body = body.strip()
    m = re.match(r"^([\w:]*?)\{(.*)\}$", body, re.S)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        p = p.strip()
        if p:
            out.extend(prefix + q for q in expand_use(p))
    return out


def check_cycles():
    problems = []
    for src in crate_roots():
        files = [p for p in rust_files() if p.startswith(src + os.sep)]
        modules = {module_path(src, p): p for p in files}
        # Names the crate root re-exports: `pub use a::X` lets `crate::X` mean module `a`.
        reexports = {}
        for root_file in ("lib.rs", "main.rs"):
            p = os.path.join(src, root_file)
            if os.path.exists(p):
                text = strip_comments(open(p).read())
                for m in re.finditer(r"pub\s+use\s+([^;]+);", text):
                    for full in expand_use(m.group(1)):
                        segs = [s.strip() for s in full.split("::")]
                        name = segs[-1].split(" as ")[-1].strip()
                        if segs and (segs[0],) in modules:
                            reexports[name] = (segs[0],)
        edges = {m: set() for m in modules}
        for mod, path in modules.items():
            text = strip_comments(open(path).read())
            paths = []
            for m in re.finditer(r"\buse\s+([^;]+);", text):
                paths.extend(expand_use(m.group(1)))
            paths.extend(m.group(0) for m in re.finditer(r"\bcrate(::\w+)+", text))
            for full in paths:
                segs = [s.strip() for s in full.split("::") if s.strip()]
                if not segs or segs[0] != "crate":
                    continue
                segs = segs[1:]
                target = None
                for n in range(len(segs), 0, -1):
                    if tuple(segs[:n]) in modules:
                        target = tuple(segs[:n])
                        break
                if target is None and segs and segs[0] in reexports:
                    target = reexports[segs[0]]
                if target is None or target == ():
                    continue
                # A module and its ancestors/descendants are one unit.
                if target[: len(mod)] == mod or mod[: len(target)] == target:
                    continue
                edges[mod].add(target)
        # Cycles: DFS.
        color, stack = {}, []

        def visit(m):
            color[m] = 1
            stack.append(m)
            for t in sorted(edges.get(m, ())):
                if color.get(t) == 1:
                    cyc = stack[stack.index(t):] + [t]
                    problems.append(
                        "import cycle in %s: %s"
                        % (os.path.relpath(src, ROOT), " -> ".join("::".join(c) for c in cyc))
                    )
                elif color.get(t) is None:
                    visit(t)
            stack.pop()
            color[m] = 2

        for m in sorted(edges):
            if color.get(m) is None:
                visit(m)
    return problems


# Keys that exist only in the node status of `/v1/cluster`.
STATUS_KEYS = [
    "raft_state", "leader_id", "last_log_index", "cluster_committed_index", "committed_index",
    "snapshot_index", "purged_index", "matched_index", "snapshot_floor", "synced_index",
    "fsyncs", "replicated_cursor", "pending_events", "lag_entries", "store_cursor",
    "events_applied", "dedup_ids", "buckets_minute", "buckets_hour", "buckets_day",
    "rejected_overload", "oldest_pending_index",
    "consecutive_errors", "events_written", "max_backlog_events",
]
STATUS_INDEX = re.compile(
    r"(\[\s*\"(%s)\"\s*\]|\.get\(\s*\"(%s)\"\s*\)|\.pointer\(\s*\"/(%s)\b)"
    % (("|".join(STATUS_KEYS),) * 3)
)


def check_status_indexing():
    problems = []
    for path in rust_files():
        rel = os.path.relpath(path, ROOT)
        if rel.startswith("protocol" + os.sep):
            continue  # the one place that defines and serializes the status (and tests it)
        for n, line in enumerate(open(path), 1):
            if STATUS_INDEX.search(line):
                problems.append("%s:%d: status read by string index: %s" % (rel, n, line.strip()))
    return problems


OUTSIDE = re.compile(r"SPEC\s*§|SPEC\.md|GUIDE\.md|\.\./shared|\bGUIDE:")


def check_outside_refs():
    problems = []
    for base, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for f in files:
            if not f.endswith((".rs", ".md", ".toml", ".sh", ".py", ".html", ".js", ".css")):
                continue
            path = os.path.join(base, f)
            if os.path.abspath(path) == os.path.abspath(__file__):
                continue
            rel = os.path.relpath(path, ROOT)
            for n, line in enumerate(open(path, errors="replace"), 1):
                if OUTSIDE.search(line):
                    problems.append("%s:%d: points outside the repository: %s" % (rel, n, line.strip()))
    return problems


def main():
    problems = check_cycles() + check_status_indexing() + check_outside_refs()
    for p in problems:
        print(p)
    if problems:
        print("%d shape problem(s)" % len(problems), file=sys.stderr)
        return 1
    print("shape: no import cycles, no string-indexed status, no references outside the repository")
    return 0


if __name__ == "__main__":
    sys.exit(main())
