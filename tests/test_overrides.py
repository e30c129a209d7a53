"""Override strings parsed once per process, and .hydra/ files read back, as Hydra's own parser and loader do."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from omegaconf import OmegaConf

from tapelab.overrides import parse_overrides, read_overrides

LINES = [
    "lr=0.01",
    "optimizer=adam",
    "objective.start=[1.5, -2]",
    "+objective.note='a b: c'",
    "~stop.grad_tol",
    "seed=1",
    "log.plots=false",
    "objective.scale=null",
    "key=yes",
    "lr=0.001,0.01",
    "lr=range(1,3)",
    "hydra/launcher=batched",
    "objective.name='1e-3'",
]


def test_parsed_overrides_are_hydra_s_and_a_repeated_line_is_parsed_once():
    ours, hydra_s = parse_overrides(LINES), OverridesParser.create().parse_overrides(LINES)
    for mine, theirs in zip(ours, hydra_s, strict=True):
        assert (mine.key_or_group, mine.type, mine.package, mine.input_line) == (
            theirs.key_or_group,
            theirs.type,
            theirs.package,
            theirs.input_line,
        )
        assert mine.value() == theirs.value()
    assert parse_overrides(["lr=0.01"])[0] is ours[0]


def test_an_override_that_does_not_parse_raises_hydra_s_error_every_time():
    with pytest.raises(OverrideParseException) as hydra_s:
        OverridesParser.create().parse_overrides(["lr=[1,"])
    for _ in range(2):
        with pytest.raises(OverrideParseException) as ours:
            parse_overrides(["lr=[1,"])
        assert str(ours.value) == str(hydra_s.value)


def test_a_saved_overrides_file_reads_back_as_omegaconf_reads_it_but_unresolved_and_an_empty_one_as_none(tmp_path):
    path = tmp_path / "overrides.yaml"
    OmegaConf.save(OmegaConf.create(LINES), path)  # as Hydra saves .hydra/overrides.yaml
    assert read_overrides(path) == list(OmegaConf.load(path)) == LINES
    OmegaConf.save(OmegaConf.create(["log.dir=${oc.env:HOME}"]), path)
    assert read_overrides(path) == ["log.dir=${oc.env:HOME}"]  # as given on the command line
    path.write_text("")  # a job killed while Hydra wrote the file
    assert read_overrides(path) == []
