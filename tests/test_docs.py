"""The README and experiments/RESULTS.md point at things that exist."""

import os
import re

from experiments import EXPERIMENTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def github_anchor(heading):
    """GitHub's heading slug: lower case, punctuation other than '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor_follows_githubs_rule():
    assert github_anchor("PPO and SAC beside brax's trainers") == "ppo-and-sac-beside-braxs-trainers"
    assert github_anchor("SAC on brax inverted_pendulum") == "sac-on-brax-inverted_pendulum"
    assert github_anchor("f-DVL vs XQL") == "f-dvl-vs-xql"


def test_every_results_link_in_the_readme_reaches_a_section():
    anchors = {github_anchor(h) for h in re.findall(r"^## (.+)$", read("experiments/RESULTS.md"), re.M)}
    links = re.findall(r"\]\(experiments/RESULTS\.md#([^)]+)\)", read("README.md"))
    assert len(links) >= 20  # one per row of the Results table
    assert not set(links) - anchors, sorted(set(links) - anchors)
    assert not anchors - set(links), sorted(anchors - set(links))  # every section is reachable


def test_every_experiment_and_make_target_named_in_the_docs_exists():
    docs = read("README.md") + read("experiments/RESULTS.md")
    named = set(re.findall(r"python -m experiments ([a-z][a-z0-9-]*)", docs))
    assert {"ppo", "ailboost", "cmorl-dst"} <= named
    assert not named - set(EXPERIMENTS), sorted(named - set(EXPERIMENTS))
    rules = re.findall(r"^([a-z][a-z0-9 -]*):", read("Makefile"), re.M)  # "bench-dpo bench-reward: bench-%: ..."
    targets = {target for rule in rules for target in rule.split()}
    used = set(re.findall(r"`make ([a-z][a-z0-9-]*)", docs))
    assert {"demo", "test"} <= used
    assert not used - targets, sorted(used - targets)
