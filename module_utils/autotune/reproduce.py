"""A trial trained again from its record (record.py), and its per-epoch values set beside the recorded ones.

Before anything trains, what can be checked is checked, each a one-line refusal: the record (the controller's,
``run_dir/records/NNNN.json``), the code against its sha256, the data set (its fingerprint recomputed from the
images, then the packed bytes), the trainer image (run by the ID the trial trained in: a rebuilt and pruned image
is refused) and the trainer's environment (``autotune_trainer.lock`` again, compared with the recorded lock). The
re-run trains in ``run_dir/reproduced/NNNN-rerun`` through the same runner, one cold trainer, with the recorded seed
and op determinism setting.
"""
import itertools
import os
import shutil
import time

from ansible.module_utils.autotune import dataset as tune_dataset
from ansible.module_utils.autotune import trialdir
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.printable import escape
from ansible.module_utils.autotune.record import FORMAT, file_sha256, record_path
from ansible.module_utils.autotune.runners import make_runner
from ansible.module_utils.autotune.tune import RunDirLock

REPRODUCED = "reproduced"
TIMING = ("epoch", "seconds", "time")  # what differs between any two runs: never compared
ENDED_EARLY = ("pruned", "stopped", "timed_out")  # the controller ended it: its record has fewer epochs than a re-run
POLL_SECONDS = 0.2
SHOWN_DIFFERENCES = 3


def locate(trial_path):
    """(run folder, trial number) of ``<run folder>/trials/<N>``."""
    folder = os.path.abspath(str(trial_path)).rstrip(os.sep)
    name, parent = os.path.basename(folder), os.path.dirname(folder)
    if not name.isdigit() or os.path.basename(parent) != trialdir.TRIALS:
        raise AutotuneError(f"autotune_trial: {escape(trial_path)!r} is not a trial folder; expected "
                            "<run folder>/trials/<N> (e.g. runs/catsdogs/trials/0003)")
    return os.path.dirname(parent), int(name)


def load(run_dir, number):
    """The trial's record, checked: one line when there is none or it is not one record.py writes."""
    path = record_path(run_dir, number)
    try:
        found = trialdir.load_json(path)
    except trialdir.TrialFileError as exc:
        raise AutotuneError(f"record: {path}: {exc}; expected the record the controller wrote") from None
    if found is None:
        raise AutotuneError(f"autotune_trial: trial {number} of {run_dir} has no record ({path}); expected a trial "
                            "that ended in a tune run with reproduce support (a duplicate draw, a fleet worker's "
                            "trial or an older run has none)")
    checks = {"format": lambda v: v == FORMAT, "spec": lambda v: isinstance(v, dict) and "seed" in v,
              "epochs": lambda v: isinstance(v, list), "dataset": lambda v: isinstance(v, dict) and "path" in v,
              "data": lambda v: isinstance(v, dict), "runner": lambda v: isinstance(v, dict) and "kind" in v,
              "code": lambda v: isinstance(v, str)}
    for field, ok in checks.items():
        if not isinstance(found, dict) or not ok(found.get(field)):
            raise AutotuneError(f"record: {path}: {field} is missing or malformed; expected the record format "
                                f"{FORMAT} the controller writes")
    for index, epoch in enumerate(found["epochs"]):
        try:
            trialdir.check_epoch(epoch, f"epochs[{index}]")
        except trialdir.TrialFileError as exc:
            raise AutotuneError(f"record: {path}: {exc}") from None
    return found


def check_code(record, run_dir):
    """The code the trial trained, unchanged since (its sha256 as recorded)."""
    path = os.path.join(run_dir, record["code"])
    try:
        found = file_sha256(path)
        with trialdir.open_regular(path) as handle:
            code = handle.read()
    except OSError as exc:
        raise AutotuneError(f"code: {path} cannot be read ({exc.strerror or exc}); expected trial "
                            f"{record['number']}'s code, kept by the controller") from None
    if found != record.get("code_sha256"):
        raise AutotuneError(f"code: {path} changed since trial {record['number']} was recorded (sha256 {found[:12]}, "
                            f"recorded {str(record.get('code_sha256'))[:12]}); expected the code the trial trained")
    return code


def check_data(record, run_dir, pack=True):
    """The data set as recorded: its fingerprint recomputed from the images, then (``pack``) the pack's bytes.
    Returns the pack's path (packed again when the run's copy is gone)."""
    config, number = record["dataset"], record["number"]
    classes = tune_dataset.scan(config["path"])
    packed, key = tune_dataset.packed_path(config, os.path.join(run_dir, "data"), classes)
    if key != record["data"].get("fingerprint"):
        raise AutotuneError(f"dataset.path: {config['path']!r} changed since trial {number} was recorded (fingerprint "
                            f"{key}, recorded {record['data'].get('fingerprint')}); expected the same images (names, "
                            "sizes, modification times) to reproduce it")
    if not pack:
        return packed
    packed = tune_dataset.prepare(config, os.path.join(run_dir, "data"), classes=classes)["path"]
    found = tune_dataset.pack_fingerprint(packed)
    if found != record["data"].get("pack"):
        raise AutotuneError(f"dataset: the packed data set {packed} holds other bytes than trial {number} trained on "
                            f"(fingerprint {found}, recorded {record['data'].get('pack')}); expected the recorded pack "
                            "(remove that folder to pack the images again)")
    return packed


def runner_for(record, trainer_path=None):
    """The recorded runner, one slot, no warm spares; a docker runner runs the image by the ID recorded."""
    runner_config = dict(record["runner"], slots=1)
    kind = runner_config["kind"]
    block = dict(runner_config.get(kind) or {}, warm=False)
    environment = record.get("environment") or {}
    if kind == "docker":
        if not environment.get("image_id"):
            raise AutotuneError(f"record: trial {record['number']} names no trainer image ID "
                                f"({environment.get('error', 'none recorded')}); expected one to re-run it in")
        block["image"] = environment["image_id"]
    runner_config[kind] = block
    try:
        runner = make_runner(runner_config, record.get("framework", "keras"), trainer_path,
                             record.get("read_only_paths", ()))
    except AutotuneError as exc:
        shown = f"image {environment.get('image')} ({environment.get('image_id', '')[:19]})" if kind == "docker" \
            else f"runner {kind}"
        raise AutotuneError(f"trainer: trial {record['number']} trained in {shown}, which cannot be used now: {exc}") \
            from None
    runner.read_only_paths = list(record.get("read_only_paths", ()))
    return runner


def lock_differences(recorded, found):
    """What differs between two trainer environments, one short phrase each (packages by name)."""
    changes = [f"{key} {recorded.get(key)} -> {found.get(key)}" for key in ("python", "machine", "trainer")
               if recorded.get(key) != found.get(key)]
    before, after = recorded.get("packages") or {}, found.get("packages") or {}
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changes.append(f"{name} {before.get(name, '(none)')} -> {after.get(name, '(none)')}")
    return changes


def check_environment(record, runner):
    """The trainer's environment now, against the recorded lock: one line naming the first differences. Returns
    the environment found (its CPU model may differ: said beside the values, not refused)."""
    recorded = record.get("environment") or {}
    if not recorded.get("packages"):
        raise AutotuneError(f"record: trial {record['number']} holds no trainer environment "
                            f"({recorded.get('error', 'none recorded')}); expected a lock to compare with")
    found = runner.environment()
    changes = lock_differences(recorded, found)
    if changes:
        more = f" and {len(changes) - SHOWN_DIFFERENCES} more" if len(changes) > SHOWN_DIFFERENCES else ""
        raise AutotuneError(f"trainer: the environment changed since trial {record['number']} was recorded "
                            f"({escape('; '.join(changes[:SHOWN_DIFFERENCES]))}{more}); expected the same "
                            "packages and trainer to reproduce it")
    return found


def rerun(record, run_dir, runner, packed, code):
    """Train the trial again in a fresh folder; returns (its epochs, its result.json, the folder)."""
    folder = os.path.join(run_dir, REPRODUCED, f"{record['number']:04d}-rerun")  # not a trial folder's name
    if os.path.lexists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    with trialdir.open_regular(os.path.join(folder, trialdir.MODEL), "w") as handle:
        handle.write(code)
    trialdir.write_json(os.path.join(folder, trialdir.SPEC), record["spec"])
    labels = {"study": record["study"], "run_dir": run_dir, "trial": os.path.basename(folder), "slot": "0"}
    process = runner.start(folder, packed, labels)
    epochs, timeout, started = [], record.get("trial_timeout") or 900, time.time()
    try:
        while process.exit_code() is None:
            epochs += process.new_epochs()
            if time.time() - started > timeout:
                process.stop()
                raise AutotuneError(f"reproduce: the re-run of trial {record['number']} ran over {timeout} s "
                                    "(budget.trial_timeout); expected it to end as the trial did")
            time.sleep(POLL_SECONDS)
        for fresh in iter(process.new_epochs, []):
            epochs += fresh
        result = process.result()
    except trialdir.TrialFileError as exc:
        raise AutotuneError(f"reproduce: the re-run of trial {record['number']} left {exc}") from None
    finally:
        process.cleanup()
    return epochs, result, folder


def _values(epoch):
    return {key: value for key, value in (epoch or {}).items() if key not in TIMING}


def compare(record, epochs):
    """(equal, rows): each epoch's recorded and re-run values; equal when every value is the same float. A trial
    the controller ended early (pruned, stopped, timed out) is compared over the epochs it recorded."""
    recorded = record["epochs"]
    shown = epochs[:len(recorded)] if record.get("outcome") in ENDED_EARLY else epochs
    rows = [{"epoch": index, "recorded": _values(old), "rerun": _values(new)}
            for index, (old, new) in enumerate(itertools.zip_longest(recorded, shown))]
    return bool(rows) and all(row["recorded"] == row["rerun"] for row in rows), rows


def lines(record, equal, rows, metric):
    """What the playbook prints: the trial's facts, one line per epoch (recorded vs re-run), the verdict."""
    environment = record.get("environment") or {}
    spec = record["spec"]
    where = environment.get("image_id", "")[:19] or environment.get("interpreter") or record["runner"]["kind"]
    out = [f"trial {record['number']} ({escape(record.get('outcome'))}): seed {spec.get('seed')}, op determinism "
           f"{'on' if spec.get('deterministic', True) else 'off'}, trainer {escape(where)}, data "
           f"{record['data'].get('fingerprint')}/{record['data'].get('pack')}, code "
           f"{str(record.get('code_sha256'))[:12]}, commit {record.get('commit') or 'none'}"]
    for row in rows:
        names = sorted(k for k in set(row["recorded"]) | set(row["rerun"]) if k.startswith("val_")) or [metric]
        cells = [f"{escape(name)} {_figure(row['recorded'].get(name))} / {_figure(row['rerun'].get(name))}"
                 for name in names]
        mark = "same" if row["recorded"] == row["rerun"] else "DIFFERENT"
        out.append(f"epoch {row['epoch'] + 1}: recorded / re-run: {', '.join(cells)}: {mark}")
    differing = [row["epoch"] + 1 for row in rows if row["recorded"] != row["rerun"]]
    out.append(f"reproduced: the re-run's {len(rows)} epoch(s) equal the record, every value" if equal else
               f"not reproduced: epoch(s) {', '.join(map(str, differing[:10]))} differ from the record")
    return out


def _figure(value):
    return "-" if value is None else repr(value)


def reproduce(trial_path, trainer_path=None, check_only=False):
    """Check the record, code, data and trainer; unless ``check_only``, train the trial again and compare.
    Returns {trial, run_dir, reproduced, epochs, lines, rerun_dir}; AutotuneError (one line) when it refuses."""
    run_dir, number = locate(trial_path)
    record = load(run_dir, number)
    with RunDirLock(run_dir):  # no tune run (nor another re-run) writes this run folder meanwhile
        code = check_code(record, run_dir)
        packed = check_data(record, run_dir, pack=not check_only)
        runner = runner_for(record, trainer_path)
        try:
            found = check_environment(record, runner)
            if check_only:
                line = f"trial {number}: record, code, data and trainer match; nothing trained (check mode)"
                return {"trial": number, "run_dir": run_dir, "reproduced": None, "epochs": [], "rerun_dir": None,
                        "lines": [line]}
            epochs, result, folder = rerun(record, run_dir, runner, packed, code)
        finally:
            runner.close()
    equal, rows = compare(record, epochs)
    out = lines(record, equal, rows, record["spec"].get("metric", "val_accuracy"))
    if not epochs and result.get("reason"):
        out.insert(1, f"the re-run trained no epoch: {escape(str(result['reason'])[:300])}")
    recorded_cpu = (record.get("environment") or {}).get("cpu")
    if recorded_cpu and found.get("cpu") and recorded_cpu != found["cpu"]:
        out.insert(1, f"note: recorded on a {escape(recorded_cpu)} CPU, re-run on a {escape(found['cpu'])}: another "
                      "instruction set may change the last bits of TensorFlow's oneDNN kernels")
    return {"trial": number, "run_dir": run_dir, "reproduced": equal, "epochs": rows, "lines": out,
            "rerun_dir": folder}
