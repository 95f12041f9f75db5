"""The docs match the tree: every repository path, make target, link and anchor, playbook variable, configuration
key, module attribute, inventory and group that README.md and docs/*.md name exists. No network, no training: reads
files only (and imports the few module_utils/autotune modules the docs name). Each failure names the doc, the line
and what is missing."""
import functools
import importlib
import inspect
import itertools
import os
import re
import shlex
import subprocess
from pathlib import Path

import ansible_collections
import optuna
import pytest
import yaml

from conftest import REPO
from ansible.module_utils.autotune import config as autotune_config

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Top-level folders of the repository. A checkout also holds folders the docs name that are not repository files
# (built or written by a run: the venvs, the sample data, run folders): paths under those are skipped.
NOT_REPO = {".git", ".venv", ".venv-bench", "data", "runs", ".pytest_cache", "__pycache__"}
TOP_DIRS = sorted(p.name for p in REPO.iterdir() if p.is_dir() and p.name not in NOT_REPO)
# Top-level files the docs may name, and the look of one that does not exist (NOTES.md, requirements-gpu.txt).
TOP_FILE = r"Makefile|Jenkinsfile|ansible\.cfg|pytest\.ini|LICENSE|requirements[\w-]*\.txt|[A-Z][A-Z_]+\.md"
# tests/unit and tests/integration are often cited relative to tests/ (as `unit/test_runners.py`).
TEST_HALVES = ("unit", "integration")
PATH_CHARS = r"[\w./<>*{},#:@+~…-]"
PATH_RE = re.compile(
    rf"(?<![\w./~$@-])(?:(?:{'|'.join(map(re.escape, TOP_DIRS + list(TEST_HALVES)))})/{PATH_CHARS}*"
    rf"|(?:{TOP_FILE})(?![\w.-]))")
# A placeholder or glob stands for paths, not one path: `runs/<study>/`, `roles/*/meta/main.yml`, `trials/NNNN/`.
PLACEHOLDER_RE = re.compile(r"[<>*…]|\.\.\.|NNNN|XXXX")

FILE_EXTENSIONS = {"py", "yml", "yaml", "json", "jsonl", "md", "txt", "log", "db", "eml", "png", "keras", "npy", "npz",
                   "j2", "cfg", "ini", "sh", "lock", "conf", "diff", "csv", "toml", "secret", "crt", "pth", "html"}

SECTIONS = autotune_config.SCHEMA["properties"]
MODULES = sorted(p.stem for p in (REPO / "module_utils" / "autotune").glob("*.py") if p.stem != "__init__") + ["runners", "kinds"]
# A dotted name in a code span that starts with a configuration section or one of our modules: `budget.max_trials`,
# `runner.docker.memory`, `trialrun.Running.step`. Not inside a longer dotted name (`optuna.study.Study`).
DOTTED_RE = re.compile(rf"(?<![\w.$/-])((?:{'|'.join(sorted(set(SECTIONS) | set(MODULES)))})(?:\.[A-Za-z_]\w*)+)(?![\w-])")

ROLE_PREFIXES = ("autotune", "dashboard", "docker", "git_trigger", "health_cron", "jenkins", "nvidia", "postgresql",
                 "trainer_image")
VARIABLE_RE = re.compile(rf"(?<![\w.$/-])((?:{'|'.join(ROLE_PREFIXES)})_[a-z0-9_]*[a-z0-9])(?![\w-])")
VARIABLE_HOMES = ["playbooks", "roles", "inventory", "library", "module_utils", "tests/playbooks"]

MAKE_RE = re.compile(r"(?<![\w./-])make[ \t]+([^\n;|&]*)")
# A code span: single backticks, on one line or over a line break inside a paragraph (as Markdown allows).
CODE_SPAN_RE = re.compile(r"(?<!`)`([^`\n]+(?:\n(?!\s*\n)[^`\n]*)*)`(?!`)")


@functools.lru_cache(maxsize=None)
def parsed(doc):
    """(lines, prose, code spans, fenced lines) of one doc. prose is the text with fenced blocks blanked (line numbers
    kept); a code span is (line, text) and may run over a line break, as in Markdown."""
    lines = doc.read_text(encoding="utf-8").split("\n")
    prose, fenced, fence = [], [], None
    for number, line in enumerate(lines, 1):
        marker = re.match(r"\s*(```+|~~~+)", line)
        if fence is None and marker:
            fence = marker.group(1)
            prose.append("")
        elif fence is not None:
            if line.strip().startswith(fence):
                fence = None
            else:
                fenced.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    text = "\n".join(prose)
    spans = [(text.count("\n", 0, match.start()) + 1, match.group(1))
             for match in CODE_SPAN_RE.finditer(text)]
    return lines, text, spans, fenced


def where(doc, line):
    return f"{doc.relative_to(REPO)}:{line}"


def slug(heading):
    """GitHub's anchor of a heading: the rendered text lowercased, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    return "".join("-" if ch == " " else ch for ch in text if ch.isalnum() or ch in "-_ ")


@functools.lru_cache(maxsize=None)
def anchors(path):
    """Every anchor of a Markdown file's headings (fenced blocks skipped: a `# comment` in a shell block is no
    heading), a repeated heading getting -1, -2 as on GitHub."""
    seen, found = {}, set()
    _, text, _, _ = parsed(path)
    for line in text.split("\n"):
        heading = re.match(r" {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def expand_braces(path):
    """`module_utils/autotune/{study,budget}.py` names two files."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return list(itertools.chain.from_iterable(
        expand_braces(path[:match.start()] + choice + path[match.end():]) for choice in match.group(1).split(",")))


@functools.lru_cache(maxsize=None)
def ignored_by_git(relative):
    """A path only this checkout has (a bench's results, a venv): it exists here, but CI's clean clone lacks it."""
    try:
        found = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", relative], check=False)
    except FileNotFoundError:  # no git here: a source tarball has no ignored files either
        return False
    return found.returncode == 0


def missing_in_path(token):
    """What of a path named in a doc is missing (a file, an anchor, a test function), or None."""
    token = token.rstrip(".,:;")
    if PLACEHOLDER_RE.search(token):
        return None
    name = None
    if "::" in token:
        token, name = token.split("::", 1)
    anchor = None
    if "#" in token:
        token, anchor = token.split("#", 1)
    for path in expand_braces(token):
        relative = f"tests/{path}" if path.split("/")[0] in TEST_HALVES else path
        target = REPO / relative
        if not target.exists():
            return f"{path}: no such file or folder in the repository"
        if ignored_by_git(relative):
            return f"{path}: ignored by git (.gitignore), so a clean clone does not have it"
        if anchor and target.suffix == ".md" and anchor not in anchors(target):
            return f"{path}#{anchor}: no such heading in {relative}"
        if name:
            source = target.read_text(encoding="utf-8")
            for part in name.split("::"):
                if not re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(part)}\b", source, re.M):
                    return f"{path}::{name}: {relative} has no test {part}"
    return None


def doc_params():
    return pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))


@doc_params()
def test_repository_paths_named_in_the_docs_exist(doc):
    """(a) Paths that start with a top-level folder (`playbooks/fleet.yml`, `tests/unit/test_x.py::test_y`) or look
    like a top-level file (Makefile, requirements-*.txt, NOTES.md), in prose, code spans and code blocks alike."""
    lines, _, _, _ = parsed(doc)
    problems = []
    for number, line in enumerate(lines, 1):
        for match in PATH_RE.finditer(line):
            problem = missing_in_path(match.group(0))
            if problem:
                problems.append(f"{where(doc, number)}: {problem}")
    assert not problems, "\n".join(problems)


def make_targets():
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set()
    for line in text.split("\n"):
        rule = re.match(r"^([^\s:=#][^:=]*):(?!=)", line)
        if rule:
            targets.update(rule.group(1).split())
    return targets


@doc_params()
def test_make_targets_named_in_the_docs_exist(doc):
    """(b) `make <target>` in a code span or a code block (prose says "make sure" too): each target the Makefile
    defines. VAR=value arguments and options are not targets; a shell operator or comment ends the command."""
    _, _, spans, fenced = parsed(doc)
    targets = make_targets()
    problems = []
    for number, text in spans + fenced:
        for match in MAKE_RE.finditer(text):
            try:
                words = shlex.split(match.group(1), comments=True)
            except ValueError:  # a quote the span does not close
                words = match.group(1).split()
            for word in words:
                if re.match(r"^[A-Za-z_]\w*=", word) or word.startswith("-"):
                    continue
                if not re.match(r"^[a-z][\w.-]*$", word):
                    break
                if word not in targets:
                    problems.append(f"{where(doc, number)}: make {word}: the Makefile has no target {word}")
    assert not problems, "\n".join(problems)


@doc_params()
def test_relative_links_and_their_anchors_exist(doc):
    """(c) A relative Markdown link (or image) names a file that exists; its #anchor is a heading of that file
    (GitHub's slugs). Links inside code are not links."""
    _, text, _, _ = parsed(doc)
    prose = CODE_SPAN_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
    problems = []
    for match in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose):
        target = match.group(1)
        number = prose.count("\n", 0, match.start()) + 1
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            problems.append(f"{where(doc, number)}: link {target}: no file {path}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{where(doc, number)}: link {target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not problems, "\n".join(problems)


@functools.lru_cache(maxsize=None)
def variable_corpus():
    """The text of every file variables may be defined or used in."""
    chunks = []
    for home in VARIABLE_HOMES:
        for root, dirs, files in os.walk(REPO / home):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                try:
                    chunks.append(Path(root, name).read_text(encoding="utf-8"))
                except (UnicodeDecodeError, OSError):  # a binary file (an image) holds no variable
                    continue
    return "\n".join(chunks)


@functools.lru_cache(maxsize=None)
def stems():
    """Names of the repository's files and folders without extension: `autotune_trainer` (the trainer package),
    `autotune_progress` (the callback plugin), `autotune_config` (the doc fragment) are names, not variables."""
    found = set()
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in NOT_REPO and not d.startswith(".venv")]
        found.update(name.split(".")[0] for name in dirs + files)
    return found


@functools.lru_cache(maxsize=None)
def collection_modules():
    """Modules of the installed collections: `postgresql_user`, `docker_image_tag`, `jenkins_plugin` read like role
    variables but are module names (docs name them as the role's tools)."""
    found = set()
    for base in ansible_collections.__path__:
        for modules in [os.path.join(base, ns, coll, "plugins", "modules")
                        for ns in os.listdir(base) if os.path.isdir(os.path.join(base, ns))
                        for coll in os.listdir(os.path.join(base, ns)) if os.path.isdir(os.path.join(base, ns, coll))]:
            if os.path.isdir(modules):
                found.update(name[:-3] for name in os.listdir(modules) if name.endswith(".py"))
    return found


@doc_params()
def test_playbook_variables_named_in_the_docs_exist(doc):
    """(d) `autotune_*` and our roles' prefixed variables appear in playbooks/, roles/, inventory/, library/,
    module_utils/ or tests/playbooks. A `_port`-style shorthand has no prefix and is not checked."""
    lines, _, _, _ = parsed(doc)
    corpus = variable_corpus()
    problems = []
    for number, line in enumerate(lines, 1):
        for match in VARIABLE_RE.finditer(line):
            name = match.group(1)
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", corpus):
                continue
            if name in stems() or name in collection_modules():
                continue
            problems.append(f"{where(doc, number)}: {name}: no such variable in {', '.join(VARIABLE_HOMES)}")
    assert not problems, "\n".join(problems)


def config_path_exists(parts):
    """Whether `budget.max_trials` / `runner.docker.memory` is a key of the configuration's JSON Schema."""
    node = {"properties": SECTIONS}
    for part in parts:
        properties = node.get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]  # search.space.<name>
        elif node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
            return True  # model.baseline.<hyperparameter>: any name
        else:
            return False
    return True


def module_attribute_exists(parts):
    """Whether `trialrun.Running.step`, `runners.base`, `dashboard.Notes` is an attribute of our module."""
    package = "ansible.module_utils.autotune"
    try:
        target = importlib.import_module(f"{package}.{parts[0]}")
    except ImportError:
        return False
    for index, part in enumerate(parts[1:], 1):
        if hasattr(target, part):
            found = getattr(target, part)
            # A function or class a module only imports is not its own: `study.reaches` is trialdir's.
            if index == 1 and (inspect.isfunction(found) or inspect.isclass(found)) \
                    and found.__module__ != target.__name__:
                return False
            target = found
            continue
        try:  # a submodule not imported yet: runners.base
            target = importlib.import_module(".".join([package, *parts[:index + 1]]))
        except ImportError:
            return False
    return True


@doc_params()
def test_dotted_config_keys_and_module_attributes_named_in_the_docs_exist(doc):
    """(e) `dataset.test_split`, `runner.docker.memory`: keys of the configuration schema. (f) `trialrun.Running.step`,
    `trialdir.reaches`: attributes of our module_utils/autotune modules. A name may be either where a section and a
    module share a name (`dataset.path`, `dataset.prepare`). Only code spans: prose and code blocks hold sentences
    and Python of other objects."""
    _, _, spans, _ = parsed(doc)
    problems = []
    for number, span in spans:
        if "unknown field" in span:  # a quoted refusal names a wrong key on purpose: `runner.cpus: unknown field; ...`
            continue
        for match in DOTTED_RE.finditer(span):
            parts = match.group(1).split(".")
            if any(part in FILE_EXTENSIONS for part in parts[1:]):  # study.db, dataset.json, health.json.tmp: files
                continue
            if parts[0] in SECTIONS and config_path_exists(parts):
                continue
            # A call is Python on an object, never a configuration key: Keras' `model.fit(...)`, `model.save(...)`.
            if parts[0] not in MODULES and span[match.end():match.end() + 1] == "(":
                continue
            if parts[0] in MODULES and module_attribute_exists(parts):
                continue
            # `study.ask`, `study.tell`, `study.set_metric_names`: the docs' `study` is also Optuna's Study object.
            if parts[0] == "study" and len(parts) == 2 and hasattr(optuna.study.Study, parts[1]):
                continue
            what = " or ".join(
                ([f"a key of the configuration schema ({'.'.join(parts[:1])} section)"] if parts[0] in SECTIONS else [])
                + ([f"an attribute defined in module_utils/autotune/{parts[0]} (not only imported there)"] if parts[0] in MODULES else []))
            problems.append(f"{where(doc, number)}: {match.group(1)}: not {what}")
    assert not problems, "\n".join(problems)


@functools.lru_cache(maxsize=None)
def inventory_names():
    """The groups and hosts of the repository's inventories (a `*_hosts` variable names a group or a host)."""
    found = {"all", "localhost"}

    def walk(group):
        for host in (group or {}).get("hosts") or {}:
            found.add(host)
        for name, child in ((group or {}).get("children") or {}).items():
            found.add(name)
            walk(child)

    for inventory in (REPO / "inventory").rglob("hosts.yml"):
        for group in (yaml.safe_load(inventory.read_text(encoding="utf-8")) or {}).values():
            walk(group)
    return found


@doc_params()
def test_inventories_and_groups_in_commands_exist(doc):
    """(g) In a command, `-i X` names an inventory (a path under inventory/; INVENTORY-style capitals are placeholders),
    and `-e <name>_hosts=X` / `<name>_hosts: X` names a group or host of our inventories."""
    _, _, spans, fenced = parsed(doc)
    problems = []
    for number, text in spans + fenced:
        for match in re.finditer(r"(?<!\S)-i[ \t]+(\S+)", text):
            value = match.group(1)
            if not value.isupper() and not value.startswith("inventory/"):
                problems.append(f"{where(doc, number)}: -i {value}: not an inventory (expected inventory/...)")
        for match in re.finditer(r"\b(\w+_hosts)(?:=|:[ \t]+)([\w.-]+)", text):
            if not match.group(2).isupper() and match.group(2) not in inventory_names():
                problems.append(f"{where(doc, number)}: {match.group(1)}={match.group(2)}: no such group or host in "
                                "inventory/hosts.yml or inventory/example/hosts.yml")
    assert not problems, "\n".join(problems)
