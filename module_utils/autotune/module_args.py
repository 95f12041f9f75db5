"""What the modules that read a tune configuration share: their arguments and the validation step."""
from ansible.module_utils.autotune.errors import AutotuneError
from ansible.module_utils.autotune.printable import escape
from ansible.module_utils.autotune.tune import prepare

# Documented once, in doc_fragments/autotune_config.py (DOCUMENTATION, and PUSHED for the two last).
CONFIG_FILE_ARGUMENTS = dict(
    config=dict(type="path", required=True),
    templates_dir=dict(type="path", required=True),
    overrides=dict(type="dict", default={}),
    runs_root=dict(type="path", default="runs"),
)
CONFIG_ARGUMENTS = dict(
    CONFIG_FILE_ARGUMENTS,
    pushed=dict(type="bool", default=False),
    data_roots=dict(type="list", elements="path", default=[]),
    limits=dict(type="dict", options=dict(max_trials=dict(type="int"), max_seconds=dict(type="int"),
                                          trial_timeout=dict(type="int"), slots=dict(type="int"))),
)

# The artifact store of a fleet (fleet_study, fleet_worker): documented once, in doc_fragments/autotune_config.py
# (ARTIFACT_STORE). The keys are secrets: no_log, so Ansible masks them in every result, -v line and async file.
ARTIFACT_ARGUMENTS = dict(
    artifacts=dict(type="str"),
    s3=dict(type="dict", options=dict(endpoint_url=dict(type="str"), region=dict(type="str"),
                                      access_key=dict(type="str", no_log=True),
                                      secret_key=dict(type="str", no_log=True),
                                      session_token=dict(type="str", no_log=True))),
)


def prepare_or_fail(module, runs_root="runs", storage=None):
    """Validate configuration, model, data set and storage; on bad input fail the module with one line per problem,
    and give each warning (config["warnings"]) as one Ansible warning. Check mode does not connect to the storage."""
    try:
        prepared = prepare(module.params["config"], module.params["templates_dir"], module.params["overrides"],
                           runs_root, storage, pushed=module.params["pushed"], data_roots=module.params["data_roots"],
                           connect_storage=not module.check_mode, limits=module.params.get("limits"))
    except AutotuneError as exc:
        module.fail_json(msg=escape(str(exc)), errors=[escape(line) for line in exc.details or [str(exc)]])
        raise  # fail_json exits; this keeps the control flow explicit for readers and linters
    for line in prepared[0]["warnings"]:
        module.warn(escape(line))
    return prepared
