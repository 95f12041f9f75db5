"""roles/jenkins and the Jenkinsfile, checked offline (no Jenkins package or war can be downloaded here).

The role renders its configuration as code, job definitions and service settings with its own
defaults (render-only mode); the JCasC YAML is checked against what the configuration-as-code,
mailer and credentials plugins read, the jobs are compiled to Jenkins XML by Jenkins Job Builder
(`jenkins-jobs test`), and the Jenkinsfile is parsed for its stages and its calls.
"""
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
import yaml

from conftest import BIN, REPO

ROLE = REPO / "roles" / "jenkins"
JENKINSFILE = REPO / "Jenkinsfile"
REPO_URL = "https://git.example.com/autotune.git"
# Secret values handed to the role: none may appear in a rendered file.
SECRETS = {
    "jenkins_admin_password": "admin-pw-Zq81x",
    "jenkins_smtp_password": "smtp-pw-Kd02y",
    "jenkins_trigger_token": "trigger-token-Wm37c",
}
STAGES = ["Checkout", "Detect model and environment", "Launch trainer", "Tune until the goal", "Notify"]


def _env():
    return dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}",
                ANSIBLE_NOCOLOR="1")


def render(folder, **extra_vars):
    """Run the role in render-only mode on localhost; returns the render folder."""
    playbook = folder / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the Jenkins configuration", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "jenkins"}]}]))
    out = folder / "out"
    variables = {"jenkins_render_dir": str(out), "jenkins_autotune_repo_url": REPO_URL, **extra_vars}
    process = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-e", json.dumps(variables)],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    return render(tmp_path_factory.mktemp("jenkins"), **SECRETS)


@pytest.fixture(scope="module")
def casc(rendered):
    return yaml.safe_load((rendered / "casc" / "jenkins.yaml").read_text())


@pytest.fixture(scope="module")
def job_xml(rendered, tmp_path_factory):
    """The jobs compiled by Jenkins Job Builder, as Jenkins would store them (config.xml per job)."""
    out = tmp_path_factory.mktemp("jjb")
    process = subprocess.run([str(BIN / "jenkins-jobs"), "test", "-o", str(out), str(rendered / "jobs")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    return {path.name: ET.parse(path).getroot() for path in out.iterdir()}


@pytest.fixture(scope="module")
def defaults():
    return yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def jenkinsfile_steps():
    """The Jenkinsfile's stages in order, each with its sh scripts and its withCredentials bindings."""
    text = JENKINSFILE.read_text()
    starts = [(m.start(), m.group(1)) for m in re.finditer(r"stage\('([^']+)'\)", text)]
    stages = []
    for index, (start, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        body = text[start:end]
        stages.append({
            "name": name,
            "scripts": re.findall(r"script:\s*'([^']*)'", body),
            "sh_calls": len(re.findall(r"\bsh\b", body)),
            "credentials": re.findall(r"string\(credentialsId:\s*'([^']+)',\s*variable:\s*'([^']+)'\)", body),
        })
    return text, stages


def test_casc_is_what_the_plugins_read(casc, defaults):
    assert set(casc) <= {"jenkins", "unclassified", "credentials", "security", "tool"}
    realm = casc["jenkins"]["securityRealm"]["local"]
    assert realm["allowsSignup"] is False
    assert realm["users"] == [{"id": "admin", "name": "Administrator", "password": "${autotune_admin_password}"}]
    assert casc["jenkins"]["authorizationStrategy"] == {"loggedInUsersCanDoAnything": {"allowAnonymousRead": False}}
    assert casc["jenkins"]["numExecutors"] == defaults["jenkins_num_executors"]
    assert casc["unclassified"]["location"]["url"] == "http://localhost:8080/"
    mailer = casc["unclassified"]["mailer"]
    assert isinstance(mailer["smtpPort"], str) and isinstance(mailer["useSsl"], bool)
    assert "authentication" not in mailer  # no SMTP user by default
    assert all(list(c) == ["string"] for c in casc["credentials"]["system"]["domainCredentials"][0]["credentials"])
    ids = {c["string"]["id"]: c["string"]["secret"]
           for c in casc["credentials"]["system"]["domainCredentials"][0]["credentials"]}
    assert ids == {"autotune-trigger-token": "${autotune_trigger_token}",
                   "autotune-smtp-password": "${autotune_smtp_password}"}
    env = {item["key"]: item["value"] for item in casc["jenkins"]["globalNodeProperties"][0]["envVars"]["env"]}
    assert env["PATH+AUTOTUNE"] == "/opt/autotune/.venv/bin"
    assert {"AUTOTUNE_SMTP_HOST", "AUTOTUNE_SMTP_PORT", "AUTOTUNE_SMTP_SECURE", "AUTOTUNE_SMTP_USERNAME"} <= set(env)


def test_every_casc_secret_reference_is_a_file_the_role_writes(rendered):
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    written = {secret["name"] for secret in role_vars["__jenkins_secrets"]}
    lines = (rendered / "casc" / "jenkins.yaml").read_text().splitlines()
    referenced = set(re.findall(r"\$\{([^}:]+)\}", "\n".join(line for line in lines if not line.lstrip().startswith("#"))))
    assert referenced and referenced <= written


def test_mailer_with_login_and_ssl(tmp_path):
    out = render(tmp_path, jenkins_smtp_host="smtp.example.com", jenkins_smtp_port=465,
                 jenkins_smtp_security="ssl", jenkins_smtp_username="autotune",
                 jenkins_casc_extra={"jenkins": {"labelString": "autotune"}})
    casc = yaml.safe_load((out / "casc" / "jenkins.yaml").read_text())
    mailer = casc["unclassified"]["mailer"]
    assert mailer["smtpHost"] == "smtp.example.com" and mailer["smtpPort"] == "465"
    assert mailer["useSsl"] is True and mailer["useTls"] is False
    assert mailer["authentication"] == {"username": "autotune", "password": "${autotune_smtp_password}"}
    env = {item["key"]: item["value"] for item in casc["jenkins"]["globalNodeProperties"][0]["envVars"]["env"]}
    assert env["AUTOTUNE_SMTP_SECURE"] == "always" and env["AUTOTUNE_SMTP_PORT"] == "465"
    assert yaml.safe_load((out / "casc" / "zz-extra.yaml").read_text()) == {"jenkins": {"labelString": "autotune"}}


def test_service_settings_turn_the_setup_wizard_off(rendered):
    override = (rendered / "systemd" / "override.conf").read_text()
    assert "-Djenkins.install.runSetupWizard=false" in override
    assert 'Environment="CASC_JENKINS_CONFIG=/etc/jenkins/casc"' in override
    assert 'Environment="SECRETS=/etc/jenkins/secrets"' in override
    ini = (rendered / "jenkins_jobs.ini").read_text()
    assert "url=http://127.0.0.1:8080" in ini and "password=" not in ini


def test_no_secret_value_in_any_rendered_file(rendered):
    files = [path for path in rendered.rglob("*") if path.is_file()]
    assert len(files) >= 4
    for path in files:
        text = path.read_text()
        for name, value in SECRETS.items():
            assert value not in text, f"{name} in {path.relative_to(rendered)}"


def test_pipeline_job_reads_the_jenkinsfile_and_is_triggered_by_the_token_credential(job_xml, casc):
    job = job_xml["autotune-pipeline"]
    definition = job.find("definition")
    assert definition.get("class") == "org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"
    assert definition.findtext("scriptPath") == "Jenkinsfile"
    assert definition.findtext("scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == REPO_URL
    assert [b.findtext("name") for b in definition.iter("hudson.plugins.git.BranchSpec")] == ["main"]
    parameters = [p.findtext("name") for p in job.iter("hudson.model.StringParameterDefinition")]
    assert parameters == ["REPO", "COMMIT", "BRANCH"]
    assert job.find("properties/org.jenkinsci.plugins.workflow.job.properties.DisableConcurrentBuildsJobProperty") is not None

    trigger = job.find(".//org.jenkinsci.plugins.gwt.GenericTrigger")
    credential_ids = {c["string"]["id"] for c in casc["credentials"]["system"]["domainCredentials"][0]["credentials"]}
    assert trigger.findtext("tokenCredentialId") in credential_ids
    assert not trigger.findtext("token")  # the token itself lives only in the credential
    variables = {v.findtext("key"): v.findtext("value") for v in trigger.iter("org.jenkinsci.plugins.gwt.GenericVariable")}
    assert variables == {"REPO": "$.repo", "COMMIT": "$.commit", "BRANCH": "$.branch"}

    # The filter (a Java regex; this one reads the same in Python): pushes of main with a commit only.
    expression = re.compile(trigger.findtext("regexpFilterExpression"))
    assert trigger.findtext("regexpFilterText") == "$BRANCH $COMMIT"
    assert expression.search("main 3f2a9c1")
    assert expression.search("main " + "ab" * 20)
    assert not expression.search("feature 3f2a9c1")
    assert not expression.search("main " + "0" * 40)  # branch deletion
    assert not expression.search("main v1.0")


def test_health_job_runs_the_health_playbook_every_minute(job_xml):
    job = job_xml["autotune-health"]
    assert job.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "* * * * *"
    assert [shell.findtext("command") for shell in job.iter("hudson.tasks.Shell")] == ["ansible-playbook playbooks/health.yml"]
    assert job.findtext("disabled") == "false" and job.findtext("concurrentBuild") == "false"
    assert job.findtext("scm/userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == REPO_URL


def test_health_job_can_be_turned_off(tmp_path):
    out = render(tmp_path, jenkins_health_job_enabled=False, jenkins_health_job_schedule="H/5 * * * *",
                 jenkins_pipeline_branch_regex="main|release/.+")
    jobs = {item["job"]["name"]: item["job"] for item in yaml.safe_load((out / "jobs" / "autotune.yaml").read_text())}
    assert jobs["autotune-health"]["disabled"] is True
    process = subprocess.run([str(BIN / "jenkins-jobs"), "test", "-o", str(tmp_path / "xml"), str(out / "jobs")],
                             capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr[-3000:]
    pipeline = ET.parse(tmp_path / "xml" / "autotune-pipeline").getroot()
    expression = re.compile(pipeline.findtext(".//regexpFilterExpression"))
    assert expression.search("release/2.1 3f2a9c1") and not expression.search("dev 3f2a9c1")
    health = ET.parse(tmp_path / "xml" / "autotune-health").getroot()
    assert health.findtext("triggers/hudson.triggers.TimerTrigger/spec") == "H/5 * * * *"


def test_jenkinsfile_stages_mirror_the_original_jobs():
    _, stages = jenkinsfile_steps()
    assert [stage["name"] for stage in stages] == STAGES


def test_jenkinsfile_only_calls_our_playbooks_with_the_parameters_from_the_environment():
    text, stages = jenkinsfile_steps()
    # Every shell step of every stage is one ansible-playbook call of playbooks/pipeline.yml.
    for stage in stages:
        assert stage["scripts"], stage["name"]
        assert stage["sh_calls"] == len(stage["scripts"]), stage["name"]
        for script in stage["scripts"]:
            assert re.fullmatch(
                r'ansible-playbook playbooks/pipeline\.yml --tags [a-z,]+ '
                r'-e autotune_repo="\$REPO" -e autotune_commit="\$COMMIT" -e autotune_branch="\$BRANCH"', script), script
    # No shell step anywhere else, no Groovy interpolation into a shell string, no other tool.
    assert len(re.findall(r"\bsh\b", text)) == sum(stage["sh_calls"] for stage in stages)
    assert not re.search(r'sh\s*"', text) and not re.search(r'script:\s*"', text)
    for word in ("curl", "docker ", "python", "bat ", "powershell"):
        assert word not in text
    # The parameters the Jenkinsfile reads are the job's.
    assert set(re.findall(r"params\.([A-Z_]+)", text)) == {"REPO", "COMMIT", "BRANCH"}


def test_jenkinsfile_secrets_come_from_credentials_the_role_defines(casc, defaults):
    _, stages = jenkinsfile_steps()
    bindings = [binding for stage in stages for binding in stage["credentials"]]
    assert bindings == [(defaults["jenkins_smtp_credential_id"], "AUTOTUNE_SMTP_PASSWORD")]
    credential_ids = {c["string"]["id"] for c in casc["credentials"]["system"]["domainCredentials"][0]["credentials"]}
    assert {credential for credential, _ in bindings} <= credential_ids
    # The playbooks read the password from exactly that variable.
    autotune_defaults = (REPO / "roles" / "autotune" / "defaults" / "main.yml")
    if autotune_defaults.exists():
        assert "lookup('ansible.builtin.env', 'AUTOTUNE_SMTP_PASSWORD')" in autotune_defaults.read_text()


def test_plugins_cover_what_the_configuration_jobs_and_jenkinsfile_use(defaults):
    plugins = {p if isinstance(p, str) else p["name"] for p in defaults["jenkins_plugins"]}
    text = JENKINSFILE.read_text()
    needed = {"configuration-as-code", "workflow-aggregator", "git", "credentials", "plain-credentials", "mailer",
              "generic-webhook-trigger"}
    if "timestamps()" in text:
        needed.add("timestamper")
    if "withCredentials" in text:
        needed.add("credentials-binding")
    assert needed <= plugins


def test_pipeline_playbook_has_a_tag_for_every_stage():
    text, stages = jenkinsfile_steps()
    used = {tag for stage in stages for script in stage["scripts"]
            for tag in re.search(r"--tags ([a-z,]+)", script).group(1).split(",")}
    process = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/pipeline.yml", "--list-tags"],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert process.returncode == 0, process.stderr[-2000:]
    listed = set()
    for match in re.finditer(r"TASK TAGS: \[([^\]]*)\]", process.stdout):
        listed |= {tag.strip() for tag in match.group(1).split(",") if tag.strip()}
    assert used - {"publish"} <= listed


def test_role_refuses_to_set_up_a_controller_without_its_secrets(tmp_path):
    playbook = tmp_path / "controller.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Set up", "hosts": "localhost", "gather_facts": False,
                                         "roles": [{"role": "jenkins"}]}]))
    process = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "--check",
                              "-e", json.dumps({"jenkins_autotune_repo_url": REPO_URL})],
                             cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert process.returncode != 0
    assert "jenkins_admin_password and jenkins_trigger_token" in process.stdout


def test_role_sources_follow_the_project_conventions(defaults):
    # Every public variable carries the role's prefix and a one-line comment (the convention of geerlingguy.docker and geerlingguy.jenkins).
    lines = (ROLE / "defaults" / "main.yml").read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^[a-z_]+:", line):
            assert line.startswith("jenkins_"), line
            assert lines[index - 1].startswith("#"), f"no comment above {line}"
    assert {"Debian.yml", "RedHat.yml"} <= {p.name for p in (ROLE / "vars").iterdir()}
    assert {"setup-Debian.yml", "setup-RedHat.yml"} <= {p.name for p in (ROLE / "tasks").iterdir()}
