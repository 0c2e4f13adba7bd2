"""profiles/slurm without a cluster: it parses, plans the recipe as written, and sizes every heavy step.

The same profile on a real SLURM controller: tests/test_slurm.py.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from alpaca_lora.testing import SNAKEMAKE
from conftest import ROOT

PROFILE_FILE = ROOT / "profiles" / "slurm" / "config.yaml"


def rules_with_all_cores() -> set[str]:
    names = set()
    for rules_file in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule )", rules_file.read_text(encoding="utf-8"), flags=re.M):
            rule = re.match(r"rule (\w+):", block)
            if rule and "threads: all_cores()" in block:
                names.add(rule.group(1))
    return names


def test_every_rule_with_all_cores_threads_gets_its_cpus_from_the_profile():
    """A cluster run has no core count: a heavy rule the profile forgets would get 1 CPU."""
    profile = yaml.safe_load(PROFILE_FILE.read_text(encoding="utf-8"))
    heavy = rules_with_all_cores()
    assert {"train_lora", "evaluate"} <= heavy
    assert heavy == set(profile["set-threads"])


def test_gpu_steps_ask_for_a_gpu_and_cluster_values_are_in_one_block():
    profile = yaml.safe_load(PROFILE_FILE.read_text(encoding="utf-8"))
    for rule in ("train_lora", "evaluate"):
        assert profile["set-resources"][rule]["slurm_partition"] == "?gpu_partition"
    assert profile["set-resources"]["evaluate"]["gpu"] == 1
    # The training's GPUs, nodes and tasks come from the recipe (the rule's resources): the profile would win.
    assert not {"gpu", "nodes", "tasks", "tasks_per_node", "mpi"} & set(
        profile["set-resources"]["train_lora"]
    )
    assert "gpu" not in str(profile["default-resources"])
    assert "--signal=TERM@" in profile["set-resources"]["train_lora"]["slurm_extra"]
    # Shipped neutral: "" is the cluster's default everywhere, so the profile runs unedited on any cluster.
    assert set(profile["__variables__"].values()) == {""}


def test_the_recipe_as_written_plans_with_the_slurm_profile(tmp_path):
    # The profile as shipped plans a dry run: a report-after-run would fail it (docs/slurm.md).
    planning = tmp_path / "slurm"
    planning.mkdir()
    (planning / "config.yaml").write_text(PROFILE_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run(
        [
            SNAKEMAKE,
            "--profile",
            str(planning),
            "--dry-run",
            "--config",
            "experiments=[phi35-mini-alpaca-recipe]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    train = result.stdout.split("rule train_lora:", 1)[1].split("\n\n", 1)[0]
    assert "gpu=1" in train and "mem_mb=48000" in train and "runtime=360" in train
