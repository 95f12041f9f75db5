"""A new study starts from the studies of earlier commits of the same repository (a second push learns from the first).

Called once, when the study is created, right after the committed baseline is enqueued (study.py):

* where: the study's own storage (a shared database holds every commit's study), and, when each run keeps its study
  in the SQLite file of its own run folder (the default), the same file in the sibling run folders that can hold
  them (``<repository>-*``, and the folders of studies named by hand);
* which: the studies whose ``repository`` user attribute is this one's (``learn.earlier``), the most recent
  ``learn.latest`` of them, and the studies named in ``learn.studies``;
* what: each one's best configuration is enqueued right after the baseline, matched by name (names no longer searched
  are dropped, new ones take their committed value, a value outside its new range too); and its finished trials
  whose parameters fit the new space are given to the sampler (``study.add_trials``), marked ``imported_from`` so
  that no budget, best, goal or report counts them (budget.own). Values scored on other data (the trials' split or
  the held-out split) or for another target are never imported; the best configuration is still tried.

Every study records its repository, commit and data (``record``), so a later one can find it and tell whether its
values compare. What was learned is kept as the study's ``learned_from`` attribute: the summary and the mail say it.
"""
import glob
import os
import re
import time

import optuna

from ansible.module_utils.autotune import budget as study_budget
from ansible.module_utils.autotune import objective
from ansible.module_utils.autotune import space as search_space
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.storage import default_storage, masked_storage

COMPLETE = optuna.trial.TrialState.COMPLETE
IMPORTED = study_budget.IMPORTED
LEARNED = "learned_from"   # the study user attribute (and summary key) saying what the study learned from
REPOSITORY, COMMIT, DATA, CREATED = "repository", "commit", "data", "created"  # what a study records of itself
LATEST = 3                 # earlier studies of the repository learned from, the most recent first
MAX_IMPORTED = 500         # finished trials given to the sampler, in all (TPE's time per draw grows with them)
SCANNED_PER_STUDY = 4      # sibling run folders opened per study learned from (a failed push holds no trial)
NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\Z")  # a study name (config.py's pattern), so also a folder


def settings(learn):
    """The ``learn`` option of tune_model, checked (one line per wrong value): None when nothing is asked."""
    if not learn:
        return None
    names = learn.get("studies") or []
    for field, value in [("repository", learn.get("repository") or "")] + [("studies", n) for n in names]:
        if value and not (isinstance(value, str) and NAME.match(value)):
            raise AutotuneError(f"learn.{field}: {str(value)[:80]!r} is not a study or repository name; expected "
                                "letters, digits, '-', '_' and '.', starting with a letter or digit")
    latest = LATEST if learn.get("latest") is None else learn["latest"]
    if not isinstance(latest, int) or latest < 0:
        raise AutotuneError(f"learn.latest: {latest!r} is invalid; expected a whole number of studies, 0 or more")
    repository = learn.get("repository") or None
    return {"repository": repository, "commit": learn.get("commit") or None, "studies": list(names),
            "earlier": bool(learn.get("earlier")) and repository is not None and latest > 0, "latest": latest}


def data_key(dataset):
    """What the values were scored on: the trials' pack (its fingerprint covers the images, the size, the colour,
    the validation split and the seed) and the held-out pack. None when unknown."""
    if not dataset.get("fingerprint"):
        return None
    return f"{dataset['fingerprint']}/{os.path.basename(dataset.get('test_path') or '-')}"


def record(study, learn, dataset):
    """A new study's own facts, for the studies of later commits to find it by and compare their values with."""
    attrs = {DATA: data_key(dataset), CREATED: time.time(), **{k: (learn or {}).get(k) for k in (REPOSITORY, COMMIT)}}
    for name, value in attrs.items():
        if value is not None:
            study.set_user_attr(name, value)


def fit(params, distributions, baseline, strict=True, searched=()):
    """An earlier trial's parameters in the new space, matched by name: {"params", "new", "outside", "dropped"}.

    A name the new space searches and the earlier trial lacks takes its committed (baseline) value ("new"); a name the
    earlier trial ``searched`` and the new space does not is dropped. A value outside its new range makes a ``strict``
    fit fail (None: a finished trial is given to the sampler only with values its space can hold); otherwise it takes
    the committed value too ("outside")."""
    fitted, new, outside = {}, [], []
    for name, distribution in distributions.items():
        if name not in params:
            fitted[name] = baseline[name]
            new.append(name)
        elif _contains(distribution, params[name]):
            fitted[name] = params[name]
        elif strict:
            return None
        else:
            fitted[name] = baseline[name]
            outside.append(name)
    return {"params": fitted, "new": new, "outside": outside,
            "dropped": sorted(n for n in searched if n not in distributions)}


def _contains(distribution, value):
    """Optuna's own check of a value against a distribution (create_trial validates each parameter)."""
    try:
        optuna.trial.create_trial(params={"p": value}, distributions={"p": distribution}, value=0.0)
    except (ValueError, TypeError):
        return False
    return True


def trained_with(trial):
    """(what an earlier trial trained with, the names it searched): its searched parameters over the model's others
    (the controller's ``params`` record)."""
    recorded = trial.user_attrs.get("params")
    params = dict(recorded) if isinstance(recorded, dict) else {}
    params.update(trial.params)
    return params, sorted(trial.params)


def importable(trials, distributions, baseline, name):
    """The earlier study's finished trials, trained there (not imported, not a repeat answered without training),
    whose parameters fit the new space, as new finished trials marked ``imported_from``."""
    kept = []
    for trial in trials:
        if trial.state != COMPLETE or trial.value is None or IMPORTED in trial.user_attrs \
                or trial.user_attrs.get("duplicate_of") is not None:
            continue
        fitted = fit(trained_with(trial)[0], distributions, baseline)
        if fitted is None:
            continue
        kept.append(optuna.trial.create_trial(
            params=fitted["params"], distributions=distributions, value=trial.value,
            user_attrs={IMPORTED: {"study": name, "trial": trial.number}}))
    return kept


def differs(attrs, direction, ours):
    """Why an earlier study's values do not compare with this one's; None when they do."""
    metric, direction = attrs.get("metric"), objective.direction_of(direction)
    if metric != ours["metric"] or direction != ours["direction"]:
        return f"it was scored to {direction} {metric}, not to {ours['direction']} {ours['metric']}"
    if not attrs.get(DATA) or not ours["data"]:
        return "its data set is not recorded"
    if attrs[DATA] != ours["data"]:
        return "it was scored on other data (the images, their split or the held-out split differ)"
    return None


def best_of(trials, goal, direction, comparable):
    """The earlier study's best trial: the one its report named (goal reached, else best verified) when its values
    compare with ours; else its best verified one in its own direction; else its best finished one."""
    own = [t for t in study_budget.counted(trials) if t.state == COMPLETE and t.value is not None
           and t.user_attrs.get("duplicate_of") is None]
    chosen = study_budget.best_trial(own, goal, direction) if comparable else None
    return chosen or objective.best([t for t in own if t.user_attrs.get("verified")], direction) \
        or objective.best(own, direction)


class Earlier:  # pylint: disable=too-few-public-methods
    """One study another run left, as found in a storage: its name, facts and trials."""

    def __init__(self, storage, where, summary):
        self.storage, self.where, self.name = storage, where, summary.study_name
        self.attrs, self.direction = summary.user_attrs, summary.direction
        started = summary.datetime_start.timestamp() if summary.datetime_start else 0.0
        self.created = self.attrs.get(CREATED) if isinstance(self.attrs.get(CREATED), (int, float)) else started

    def finished(self):
        study_id = self.storage.get_study_id_from_name(self.name)
        return self.storage.get_all_trials(study_id, deepcopy=False, states=(COMPLETE,))


def _places(storage, run_dir, learn):
    """(where, storage URL or object) to look in: the study's own storage; when this run keeps its study in its own
    folder's SQLite file (the default storage), also that file of the sibling run folders that can hold the studies
    asked for (``<repository>-*``, the most recently written first, and the folders named after ``learn.studies``)."""
    url = storage if isinstance(storage, str) else storage.url
    places = [(masked_storage(url), storage)]
    here = os.path.abspath(run_dir)
    if url != default_storage(here):
        return places
    parent = os.path.dirname(here)
    folders = [os.path.join(parent, name) for name in learn["studies"]]
    if learn["earlier"]:
        files = glob.glob(os.path.join(glob.escape(parent), glob.escape(learn["repository"]) + "-*",
                                       os.path.basename(_file(here))))
        files.sort(key=_written, reverse=True)
        folders += [os.path.dirname(f) for f in files[:learn["latest"] * SCANNED_PER_STUDY]]
    for folder in dict.fromkeys(folders):
        if folder != here and os.path.isfile(_file(folder)):
            places.append((folder, default_storage(folder)))
    return places


def _file(run_dir):
    return default_storage(run_dir).partition(":///")[2]


def _written(path):
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _found(places, current, opened, progress):
    """Every study of those places but the current one, by name (the first place holding a name wins)."""
    found = {}
    for where, storage in places:
        try:
            if isinstance(storage, str):  # a sibling's file: read as it is, no table created in it
                storage = optuna.storages.RDBStorage(storage, skip_table_creation=True)
                opened.append(storage)
            summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
        except Exception as exc:  # pylint: disable=broad-except  # an unreadable file is passed over, said in one line
            progress(f"learn: passed over {where}: cannot read its studies ({type(exc).__name__})")
            continue
        for summary in summaries:
            if summary.study_name != current:
                found.setdefault(summary.study_name, Earlier(storage, where, summary))
    return found


def _chosen(found, learn):
    """The studies named by hand (in their order), then the repository's others, the most recent first."""
    named = [found[name] for name in learn["studies"] if name in found]
    others = [e for e in found.values() if learn["earlier"] and e.name not in learn["studies"]
              and e.attrs.get(REPOSITORY) == learn["repository"]]
    return named, sorted(others, key=lambda e: e.created, reverse=True)


def start_from_earlier(study, learn, plan, target, dataset, storage, run_dir, progress):
    """Record the new study's facts, then start it from the earlier studies asked for (module docstring). Returns
    what it learned (also kept as the study's ``learned_from`` attribute), None when nothing was asked."""
    record(study, learn, dataset)
    if not learn or not (learn["studies"] or learn["earlier"]):
        return None
    started, opened = time.time(), []
    try:
        places = _places(storage, run_dir, learn)
        named, others = _chosen(_found(places, study.study_name, opened, progress), learn)
        learned = _learn_all(study, named, others, learn, plan, target, data_key(dataset))
    finally:
        for storage_opened in opened:
            storage_opened.engine.dispose()
    missing = [name for name in learn["studies"] if name not in {e["study"] for e in learned["studies"]}]
    learned["lines"] += [f"learn: study {name} not found (looked in {_where(places)}); started without it"
                         for name in missing]
    if learn["earlier"] and not any(e["repository"] == learn["repository"] for e in learned["studies"]):
        learned["lines"].append(f"learn: no earlier study of repository {learn['repository']} with a finished trial "
                                f"(looked in {_where(places)}); the search starts from the baseline alone")
    learned["seconds"] = round(time.time() - started, 3)
    study.set_user_attr(LEARNED, learned)
    for line in learned["lines"]:
        progress(line)
    return learned


def _where(places):
    return places[0][0] + (f" and {len(places) - 1} sibling run folder(s)" if len(places) > 1 else "")


def _learn_all(study, named, others, learn, plan, target, data):
    """Enqueue each earlier study's best after the baseline (trials 1, 2, ...), then give the sampler their finished
    trials (numbered after those: the baseline stays trial 0 and the best configurations come next)."""
    ours = {"data": data, "metric": target["metric"], "direction": target["direction"]}
    distributions = search_space.distributions(plan["space"])
    queued = {search_space.frozen({n: plan["baseline"][n] for n in plan["space"]}): 0}
    entries, imports, passed = [], [], []
    for earlier in named + others:
        if earlier not in named and len([e for e in entries if e["study"] not in learn["studies"]]) >= learn["latest"]:
            break
        try:
            trials = earlier.finished()
        except Exception as exc:  # pylint: disable=broad-except  # an unreadable study is passed over, said in one line
            passed.append(f"learn: passed over study {earlier.name} in {earlier.where}: cannot read its trials "
                          f"({type(exc).__name__})")
            continue
        if earlier not in named and not trials:
            continue  # a push that failed before any trial finished teaches nothing
        entry, found = _learn_one(study, earlier, trials, plan, target, ours, distributions, queued)
        entries.append(entry)
        imports.append(found)
    room = MAX_IMPORTED
    for entry, found in zip(entries, imports):
        entry["imported"] = min(len(found), room)
        room -= entry["imported"]
        entry["line"] = _line(entry, target["metric"])
    study.add_trials([t for found in imports for t in found][:MAX_IMPORTED])
    return {"studies": entries, "lines": passed + [e["line"] for e in entries],
            "imported": MAX_IMPORTED - room, "enqueued": sorted({e["as_trial"] for e in entries} - {None, 0})}


def _learn_one(study, earlier, trials, plan, target, ours, distributions, queued):
    """One earlier study: its best configuration enqueued (unless already queued), its trials that can be given."""
    why = differs(earlier.attrs, earlier.direction, ours)
    direction = objective.direction_of(earlier.direction)
    best = best_of(trials, target["goal"], direction, why is None)
    entry = {"study": earlier.name, "repository": earlier.attrs.get(REPOSITORY), "commit": earlier.attrs.get(COMMIT),
             "where": earlier.where, "finished": len(trials), "values_not_given": why, "best_trial": None,
             "best_value": None, "as_trial": None, "new": [], "dropped": [], "outside": []}
    if best is not None:
        params, searched = trained_with(best)
        fitted = fit(params, distributions, plan["baseline"], strict=False, searched=searched)
        key = search_space.frozen(fitted["params"])
        if key not in queued:
            # Where the earlier best stopped, too: a goal stop the held-out split refused there was moved past it.
            study.enqueue_trial(fitted["params"], user_attrs={LEARNED: {"study": earlier.name, "trial": best.number,
                                                                        "stop_goal": best.user_attrs.get("stop_goal")}})
            queued[key] = len(study.get_trials(deepcopy=False)) - 1
        entry.update(best_trial=best.number, best_value=best.value, as_trial=queued[key],
                     **{k: fitted[k] for k in ("new", "dropped", "outside")})
    found = importable(trials, distributions, plan["baseline"], earlier.name) if why is None else []
    return entry, found


def _line(entry, metric):
    """One progress line (and report line) per study learned from."""
    commit = f" (commit {entry['commit'][:7]})" if entry.get("commit") else ""
    if entry["best_trial"] is None:
        best = "it has no finished trial"
    else:
        value = f"{metric} {entry['best_value']:.4f}" if entry["values_not_given"] is None else "its own score"
        best = (f"its best (trial {entry['best_trial']}, {value}) is "
                + ("the committed baseline here (trial 0)" if entry["as_trial"] == 0 else f"trial {entry['as_trial']}"))
        notes = [f"{label}: {', '.join(entry[key])}" for key, label in
                 (("new", "new here, at the committed value"), ("dropped", "no longer searched"),
                  ("outside", "outside the new range, at the committed value")) if entry[key]]
        best += f" ({'; '.join(notes)})" if notes else ""
    given = (f"{entry['imported']} of its {entry['finished']} finished trials given to the sampler"
             if entry["values_not_given"] is None else f"no value given to the sampler: {entry['values_not_given']}")
    return f"learned from study {entry['study']}{commit}: {best}; {given}"
