import json
import re

import pytest

from ecgpipe.config import ConfigError, config_from_dict, load_config, preset_names


def test_paper4_preset_matches_the_issue():
    cfg = load_config("paper4")
    assert cfg.classes == {
        "normal": ["(N", "(NSR"],
        "afib": ["(AFIB", "(AFL"],
        "vt": ["(VT"],
        "vf": ["(VF", "(VFIB", "(VFL"],
    }
    assert cfg.segments.length_s == cfg.segments.stride_s == 2.0
    assert set(cfg.databases) == {"mitdb", "vfdb"}
    assert cfg.database("mitdb").fs == 360 and cfg.database("vfdb").fs == 250
    assert cfg.database("mitdb").same_subject == {"202": "201"}
    assert "paper4" in preset_names()


def test_a_database_s_own_same_subject_pairs_add_to_the_known_ones():
    """Before 0.20.0 any pair of one's own replaced the registry's: mitdb 202 became a patient apart from 201 (its
    other record) and could sit in a grouped fold's training set while 201 was tested."""
    from ecgpipe.databases import subject_id

    cfg = load_config("paper4", {"databases": {"mitdb": {"same_subject": {"124": "123"}}}})
    mitdb = cfg.database("mitdb")
    assert mitdb.same_subject == {"202": "201", "124": "123"}
    assert subject_id("mitdb", "202", mitdb.same_subject) == subject_id("mitdb", "201", mitdb.same_subject) == "mitdb:201"
    # chains are followed to their end and rings are one subject (found by a review: 202 stayed mitdb:201 while 201
    # went to another database's patient)
    chained = load_config("paper4", {"databases": {"mitdb": {"same_subject": {"201": "nstdb:201x"}}}}).database("mitdb")
    assert {subject_id("mitdb", r, chained.same_subject) for r in ("201", "202")} == {"nstdb:201x"}
    ring = load_config("paper4", {"databases": {"mitdb": {"same_subject": {"201": "202"}}}}).database("mitdb")
    assert {subject_id("mitdb", r, ring.same_subject) for r in ("201", "202")} == {"mitdb:201"}
    # a pair of one's own for a known record wins: the user knows their copy of the data
    assert load_config("paper4", {"databases": {"mitdb": {"same_subject": {"202": "203"}}}}).database("mitdb").same_subject == {"202": "203"}


def test_preset_by_path_equals_preset_by_name(tmp_path):
    from importlib import resources

    text = resources.files("ecgpipe.configs").joinpath("paper4.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert load_config(path) == load_config("paper4")


def _write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


BASE = """
[databases.mitdb]
[classes]
a = ["(N"]
b = ["(AFIB"]
"""


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, BASE + "[spectrogram]\nnperseg = 64\nnoverlapp = 3\n"))
    assert "spectrogram.noverlapp" in str(err.value) and "unknown key" in str(err.value)
    assert "c.toml" in str(err.value)


def test_a_misspelt_key_gets_the_closest_key_of_its_table_and_a_far_one_the_way_to_list_them(tmp_path):
    text = "segmnets = 1\n" + BASE.replace("[databases.mitdb]", '[databases.mitdb]\nleed = ["MLII"]') + (
        '[segments]\nlenght_s = 4\n[endpoints.af]\nclases = ["b"]\n[classifier]\nzzz = 1\n[[sweep.classifiers]]\nkindd = "svm"\n')
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, text))
    lines = set(str(err.value).splitlines()[1:])
    assert {"  segmnets: unknown key (did you mean 'segments'?)",
            "  segments.lenght_s: unknown key (did you mean 'length_s'?)",
            "  databases.mitdb.leed: unknown key (did you mean 'lead'?)",  # inside a table of tables, as in a list
            "  endpoints.af.clases: unknown key (did you mean 'classes'?)",
            "  sweep.classifiers.0.kindd: unknown key (did you mean 'kind'?)",
            "  classifier.zzz: unknown key (misspelt? `ecgpipe config NAME` prints a preset's every key)"} <= lines, lines
    with pytest.raises(ConfigError, match=r"sweep\.features\[0\]\.backbon: unknown key \(did you mean 'backbone'\?\)"):
        load_config(_write(tmp_path, BASE + '[[sweep.features]]\nbackbon = "x"\n'))


@pytest.mark.parametrize("value", ['"yes"', '"false"', "1", "0"])
def test_a_switch_takes_true_or_false_only(tmp_path, value):
    """pydantic's lax booleans read "yes", "false" or 1 as switches: `strict = "false"` turned strict mode on."""
    with pytest.raises(ConfigError, match=r"run\.strict: Input should be a valid boolean"):
        load_config(_write(tmp_path, BASE + f"[run]\nstrict = {value}\n"))
    assert load_config(_write(tmp_path, BASE + "[run]\nstrict = false\n")).run.strict is False


def test_invalid_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"segments\.target_fs"):
        load_config(_write(tmp_path, BASE + "[segments]\ntarget_fs = -5\n"))
    with pytest.raises(ConfigError, match=r"classifier\.kernel"):
        load_config(_write(tmp_path, BASE + "[classifier]\nkernel = 'cubic'\n"))


def test_inconsistent_settings_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="noverlap"):
        load_config(_write(tmp_path, BASE + "[spectrogram]\nnperseg = 32\nnoverlap = 32\n"))
    with pytest.raises(ConfigError, match="in both"):
        load_config(_write(tmp_path, BASE.replace('b = ["(AFIB"]', 'b = ["(N"]')))
    with pytest.raises(ConfigError, match="must start with"):
        load_config(_write(tmp_path, BASE.replace('"(AFIB"', '"AFIB"')))
    with pytest.raises(ConfigError, match=r"databases\.mydb"):
        load_config(_write(tmp_path, BASE.replace("[databases.mitdb]", "[databases.mydb]")))
    with pytest.raises(ConfigError, match="Nyquist"):
        load_config(_write(tmp_path, BASE + "[segments]\ntarget_fs = 64\n[spectrogram]\nnperseg = 32\nnoverlap = 16\nnfft = 64\n"))


def test_unknown_preset_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no preset named 'paper5'"):
        load_config("paper5")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[classes\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_spectrogram_array_name_tracks_only_what_shapes_it():
    from ecgpipe.stages.spectrograms import array_name as spectrogram_array_name

    a = load_config("paper4")
    b = load_config("paper4", {"classifier": {"C": 1.0}})
    c = load_config("paper4", {"spectrogram": {"nfft": 512}})
    two = load_config("paper4", {"segments": {"n_leads": 2}})
    assert spectrogram_array_name(a) == spectrogram_array_name(b)
    assert len({spectrogram_array_name(x) for x in (a, c, two)}) == 3
    assert a.window_shape == (500,) and two.window_shape == (2, 500)


def test_n_leads_is_one_or_two():
    with pytest.raises(ConfigError, match="segments.n_leads"):
        load_config("paper4", {"segments": {"n_leads": 3}})
    with pytest.raises(ConfigError, match="databases.mitdb.second_lead"):
        load_config("paper4", {"databases": {"mitdb": {"second_lead": "V1"}}})


def test_sweep_settings_are_validated_and_expanded():
    from ecgpipe.config import ConfigError, load_config

    cfg = load_config("paper4", {"rhythm": {"enabled": True}, "sweep": {
        "features": [{}, {"layer": "_blocks.14"}],
        "classifiers": [{"kind": "logreg", "C": 0.1}, {"kind": "svc", "inputs": "cnn+rhythm", "tune": True}],
    }})
    assert [f.layer for f in cfg.feature_variants] == [None, "_blocks.14"]
    assert all(f.backbone == "efficientnet_lite0" for f in cfg.feature_variants)  # overrides keep the other keys
    assert [c.label for c in cfg.classifiers] == ["LogReg C=0.1", "+RR(w=0.3) SVC(rbf) C∈[1.0, 10.0, 100.0] nested"]
    assert cfg.selection_protocol == "grouped_by_subject"
    with pytest.raises(ConfigError, match=r"sweep.features\[0\]"):
        load_config("paper4", {"sweep": {"features": [{"bakbone": "resnet18"}]}})
    with pytest.raises(ConfigError, match="set rhythm.enabled = true"):
        load_config("paper4", {"sweep": {"classifiers": [{"inputs": "rhythm"}]}})
    with pytest.raises(ConfigError, match="sweep.classifiers.0.kind"):
        load_config("paper4", {"sweep": {"classifiers": [{"kind": "random_forest"}]}})
    with pytest.raises(ConfigError, match="sweep.select_by"):
        load_config("paper4", {"sweep": {"select_by": "leave_one_database_out"}})
    # a row given twice (or twice under two names) would be computed twice and shown twice
    with pytest.raises(ConfigError, match=r"classifiers\[2\] repeats classifiers\[0\] \(names aside\)"):
        load_config("paper4", {"sweep": {"classifiers": [{"kind": "svc"}, {"kind": "logreg"}, {"kind": "svc", "name": "again"}]}})
    with pytest.raises(ConfigError, match=r"features\[1\] repeats features\[0\]"):
        load_config("paper4", {"sweep": {"features": [{"layer": "_blocks.14"}, {"layer": "_blocks.14"}]}})
    # refused in a file being read, never in what an earlier version stored (a model's config, a run's config.json)
    from ecgpipe.config import PipelineConfig

    stored = load_config("paper4").model_dump(mode="json")
    stored["sweep"]["classifiers"] = [{"kind": "svc"}, {"kind": "svc", "name": "again"}]
    assert len(PipelineConfig.model_validate_json(json.dumps(stored)).classifiers) == 2
    assert len(config_from_dict(stored, "config.json").classifiers) == 2


def test_every_shipped_preset_is_valid_and_shares_paper4_data():
    """The paper4 presets differ in how segments are made and classified, never in which records or classes they
    read; the cinc2017 preset reads the CinC 2017 data as published."""
    paper4 = load_config("paper4")
    assert {"paper4", "paper4-sweep", "paper4-best", "paper4-paper-best", "cinc2017"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert cfg.name == name
        if name.startswith("paper4"):
            assert cfg.classes == paper4.classes and set(cfg.databases) == set(paper4.databases)
    cinc = load_config("cinc2017")
    settings = cinc.database("cinc2017")
    assert settings.labels_csv == "REFERENCE-v3.csv" and settings.fs == 300.0 and settings.checksum == "verify"
    assert cinc.classes == {"normal": ["N"], "afib": ["A"], "other": ["O"]} and cinc.segments.exclude_labels == ["~"]
    assert cinc.selection_protocol == "grouped_by_subject" and cinc.cv.n_splits == 5
    best = load_config("paper4-paper-best")
    assert best.segments.n_leads == 2 and best.rhythm.waveform and best.classifier.inputs == "cnn+rhythm"
    assert best.rhythm.irregularity and best.rhythm.context_s == 60
    assert len(best.rhythm_columns) == 8 + 6 + 11 and best.classifier_label.startswith("+RR+irr+wave(w=0.7)")


def test_every_benchmark_config_is_valid():
    """The lever configs the README's commands name (tests/benchmarks/configs) load and validate."""
    from pathlib import Path

    configs = sorted((Path(__file__).parent / "benchmarks" / "configs").glob("*.toml"))
    assert configs
    from ecgpipe.orchestration.preflight import unused_classifier_settings

    for path in configs:
        cfg = load_config(path)
        assert cfg.name == path.stem, path
        assert unused_classifier_settings(cfg) == [], path  # what a run of it would warn about


def test_a_config_extends_a_preset_or_a_file_and_states_only_what_it_changes(tmp_path):
    lever = tmp_path / "levers" / "lever.toml"
    lever.parent.mkdir()
    lever.write_text('extends = "paper4-best"\nname = "lever"\n[rhythm]\nwaveform = true\n')
    cfg = load_config(lever)
    expected = load_config("paper4-best", {"name": "lever", "rhythm": {"waveform": True}})
    assert cfg.model_copy(update={"description": expected.description}) == expected  # its description says it changed
    assert cfg.rhythm.waveform and cfg.rhythm.irregularity  # the base's other rhythm keys stay
    # a relative path is the extending file's neighbour, whatever the working directory
    (tmp_path / "levers" / "child.toml").write_text('extends = "lever.toml"\nname = "child"\n[cv]\nn_splits = 5\n')
    child = load_config(tmp_path / "levers" / "child.toml")
    assert child.name == "child" and child.cv.n_splits == 5 and child.rhythm.waveform
    assert child.cv.protocols == expected.cv.protocols


def test_a_preset_is_found_even_beside_a_folder_of_its_name_and_a_stated_class_list_replaces_the_base_s(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper4-best").mkdir()  # e.g. a run's output folder (--out paper4-best)
    assert load_config("paper4-best").name == "paper4-best"
    (tmp_path / "two.toml").write_text('extends = "paper4-best"\n[classes]\nvf = ["(VF"]\nvt = ["(VT"]\n'
                                       'afib = ["(AFIB"]\nnormal = ["(N"]\n')
    classes = load_config("two.toml").classes
    assert list(classes) == ["vf", "vt", "afib", "normal"] and classes["vf"] == ["(VF"]  # the file's, in its order


def test_unset_removes_inherited_keys_before_the_file_s_own_are_merged(tmp_path):
    """Nothing inherited could be removed: a file dropping vf from paper4-best failed on the base's shockable
    endpoint. ``unset`` removes keys of the base; a table removed and stated again is the file's alone."""
    base = load_config("paper4-best")
    (tmp_path / "no-vf.toml").write_text(
        'extends = "paper4-best"\nunset = ["endpoints.shockable", "rhythm.irregularity"]\n'
        '[classes]\nnormal = ["(N", "(NSR"]\nafib = ["(AFIB", "(AFL"]\nvt = ["(VT"]\n')
    cfg = load_config(tmp_path / "no-vf.toml")
    assert list(cfg.classes) == ["normal", "afib", "vt"] and "shockable" not in cfg.endpoints
    assert "af" in cfg.endpoints and cfg.endpoints["af"] == base.endpoints["af"]  # the rest of the table stays
    assert base.rhythm.irregularity and not cfg.rhythm.irregularity  # back to the default
    assert cfg.rhythm.context_s == base.rhythm.context_s
    (tmp_path / "only-af.toml").write_text('extends = "paper4-best"\nunset = ["endpoints"]\n'
                                           '[endpoints.atrial]\nclasses = ["afib"]\n')
    assert list(load_config(tmp_path / "only-af.toml").endpoints) == ["atrial"]
    # without unset, the same class list is refused by the base's endpoint that names vf
    (tmp_path / "keeps.toml").write_text('extends = "paper4-best"\n[classes]\nnormal = ["(N"]\nafib = ["(AFIB"]\nvt = ["(VT"]\n')
    with pytest.raises(ConfigError, match=r"endpoints\.shockable: \['vf'\] not in classes .*unset = \[\"endpoints\.shockable\"\]"):
        load_config(tmp_path / "keeps.toml")  # the error says how to drop the inherited endpoint


def test_an_invalid_key_in_an_extends_chain_names_the_file_that_sets_it(tmp_path):
    """The typo was in the base (c1.toml), the error named only the file given ("invalid configuration in s1.toml
    (extends c1.toml): sampling.max_per_clas: unknown key")."""
    (tmp_path / "c1.toml").write_text('extends = "paper4"\n[sampling]\nmax_per_clas = 40\n')
    (tmp_path / "s1.toml").write_text('extends = "c1.toml"\n[cv]\nn_splits = 0\n')
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "s1.toml")
    text = str(err.value)
    assert f"sampling.max_per_clas: unknown key (did you mean 'max_per_class'?) (set in {tmp_path / 'c1.toml'})" in text
    assert "  cv.n_splits: " in text and f"(set in {tmp_path / 's1.toml'})" not in text  # the given file: no note


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('unset = ["cv"]', r"a\.toml: unset removes keys inherited through extends, and this file extends nothing"),
        ('extends = "paper4"\nunset = ["endpoints.nothing"]', r"a\.toml: unset names 'endpoints\.nothing', which preset paper4 does not set"),
        ('extends = "paper4"\nunset = "cv"', r"a\.toml: unset must be a list of dotted keys"),
        ('extends = "paper4"\nunset = ["cv..n_splits"]', r"unset names 'cv\.\.n_splits'"),
        ('extends = "paper4"\n[databases.mitdb]\nrecords = ["100", "101", "100"]', r"records listed more than once: \['100'\]"),
    ],
)
def test_a_wrong_unset_or_a_record_listed_twice_is_refused_naming_the_file(tmp_path, text, problem):
    (tmp_path / "a.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path / "a.toml")


def test_a_long_record_list_is_checked_once_not_once_per_record():
    """A config listing its records (``databases.<db>.records``) is loaded by every task: a count per record made a
    list of 60 000 records take 41 s to load."""
    from ecgpipe.config import load_config as load

    names = [f"r{i:06d}" for i in range(200_000)]
    cfg = load("cinc2017", {"databases": {"cinc2017": {"records": names}}})
    assert len(cfg.databases["cinc2017"].records) == 200_000
    with pytest.raises(ConfigError, match=r"records listed more than once: \['r000007', 'r000009'\]"):
        load("cinc2017", {"databases": {"cinc2017": {"records": [*names, "r000009", "r000007", "r000009"]}}})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('extends = "paper5"', r"no preset named 'paper5' \(extended by .*a\.toml\)"),
        ('extends = "missing.toml"', r"missing\.toml not found \(extended by .*a\.toml\)"),
        ('extends = "b.toml"', r"extends itself through .*a\.toml -> .*b\.toml -> .*a\.toml"),
        ("extends = 3", r"a\.toml: extends must name a preset or a \.toml file, got 3"),
        ('extends = "sub/"', r"sub not found \(extended by .*a\.toml\)"),
    ],
)
def test_a_broken_extends_chain_is_refused_naming_the_files(tmp_path, text, problem):
    (tmp_path / "a.toml").write_text(text + "\n")
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=problem):
        load_config(tmp_path / "a.toml")


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"sampling": {"per_class": {"normal": -5}}}, "sampling.per_class.normal", "greater than or equal to 1"),
        ({"sampling": {"per_class": {"afib": 0}}}, "sampling.per_class.afib", "greater than or equal to 1"),
        ({"sampling": {"max_per_class": 0}}, "sampling.max_per_class", "greater than 0"),
        ({"spectrogram": {"window": "hanning"}}, "spectrogram.window", "'hanning' is not a scipy.signal window"),
        ({"spectrogram": {"window": "kaiser"}}, "spectrogram.window", "'kaiser' is not a scipy.signal window name usable without parameters"),
        ({"classifier": {"gamma": "sclae"}}, "classifier.gamma", "'sclae' is not 'scale', 'auto' or a number > 0"),
        ({"classifier": {"gamma": 0}}, "classifier.gamma", "must be 'scale', 'auto' or a number > 0"),
        ({"classifier": {"gamma_grid": ["scale", "sclae"]}}, "classifier.gamma_grid", r"gamma_grid\[1\] 'sclae'"),
        ({"classifier": {"gamma_grid": [0.1, -1]}}, "classifier.gamma_grid", r"gamma_grid\[1\] \(-1\)"),
        ({"sweep": {"classifiers": [{"gamma": "Scale"}]}}, "sweep.classifiers.0.gamma", "'Scale' is not"),
        ({"segments": {"stride_s": 0.001}}, "segments.stride_s", r"\(0.001 s\) rounds to 0 samples at target_fs \(250 Hz\)"),
        ({"segments": {"length_s": 0.001}}, "segments.length_s", "rounds to 0 samples"),
        ({"segments": {"length_s": 0.256}}, "spectrogram", r"a segment of 64 samples gives one STFT frame \(nperseg 64, noverlap 56\)"),
        ({"spectrogram": {"fmin": 10.1, "fmax": 10.2}}, "spectrogram.fmin/fmax", r"\[10.1, 10.2\] Hz holds no FFT bin"),
        # found by a review of configs users write (2026-12-07): each loaded, changed a result or failed late
        ({"classifier": {"pca": True}}, "classifier.pca", r"valid integer \(got true\)"),  # was 1 component
        ({"sampling": {"max_per_class": True}}, "sampling.max_per_class", r"\(got true\)"),  # was 1 window per class
        ({"segments": {"length_s": True}}, "segments.length_s", r"\(got true\)"),
        ({"run": {"retries": False}}, "run.retries", r"\(got false\)"),
        ({"segments": {"target_fs": "360"}}, "segments.target_fs", r"valid number \(got '360'\)"),
        ({"segments": {"length_s": float("inf")}}, "segments.length_s", "finite number"),  # was a traceback
        ({"classifier": {"C": float("inf")}}, "classifier.C", "finite number"),
        ({"spectrogram": {"nfft": 10**11}}, "spectrogram.nfft", "less than or equal to 1048576"),  # was 373 GiB allocated
        ({"cv": {"seed": -1}}, "cv.seed", r"greater than or equal to 0 \(got -1\)"),  # failed after the table
        ({"classifier": {"seed": 2**32}}, "classifier.seed", "less than 4294967296"),
        ({"features": {"device": "gpu"}}, "features.device", "'gpu' is not a device: 'auto'"),  # failed in the features
        ({"classifier": {"kind": "SVC"}}, "classifier.kind", r"\(got 'SVC'\); did you mean 'svc'\?"),
        ({"spectrogram": {"scaling": "dB"}}, "spectrogram.scaling", "did you mean 'db'"),
        ({"segments": {"length_s": -2}}, "segments.length_s", r"greater than 0 \(got -2\)"),
        ({"spectrogram": {"noverlap": 64}}, "spectrogram", r"^  spectrogram: noverlap \(64\) must be smaller"),  # no "Value error,"
        ({"classes": {"normal": ["(N"], "afib": ["(N"]}}, "classes", r"^  classes: label '\(N' is in both"),  # no "(top level)"
        ({"cv": {"protocols": ["grouped_by_subject", "grouped_by_subject"]}}, "cv.protocols", "grouped_by_subject listed twice"),
        ({"endpoints": {"shockable": {"classes": ["vt", "vt"]}}}, "endpoints.shockable.classes", "vt listed twice"),
    ],
)
def test_values_that_would_fail_late_or_corrupt_data_are_refused_naming_the_setting(overrides, key, problem):
    """Each of these used to load and then fail in a stage (or silently keep the wrong segments)."""
    with pytest.raises(ConfigError) as err:
        load_config("paper4", overrides)
    lines = [line for line in str(err.value).splitlines() if key in line]
    assert lines, str(err.value)
    assert any(re.search(problem, line) for line in lines), str(err.value)


def test_leaving_one_database_out_of_one_database_is_refused_before_the_run():
    """It failed after the segments stage (22 s on two records), naming the run's windows."""
    with pytest.raises(ConfigError, match="cv.protocols: leave_one_database_out needs two databases or more"):
        config_from_dict({"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]},
                          "cv": {"protocols": ["grouped_by_subject", "leave_one_database_out"]}})


def test_settings_that_do_nothing_are_warned_and_a_stated_class_list_names_the_classes_it_drops(tmp_path):
    """Each was silent (a review, 2026-12-07): [classifier] changed in a file extending cinc2017 while its sweep's
    rows are what runs; the rhythm block's parts with the block off; a stride past the window; [classes] naming two
    of a base's three classes."""
    from ecgpipe.orchestration.preflight import unused_classifier_settings

    mine = tmp_path / "mine.toml"
    mine.write_text('extends = "cinc2017"\n[classifier]\nlearning_rate = 0.2\n')
    (line,) = unused_classifier_settings(load_config(mine))
    assert line.startswith("classifier: does nothing here: sweep.classifiers lists the rows")
    lines = unused_classifier_settings(load_config("paper4", {"rhythm": {"enabled": False, "waveform": True, "beats": True},
                                                              "segments": {"stride_s": 10.0}}))
    assert lines == ["rhythm: beats, waveform do nothing with rhythm.enabled = false (set enabled = true to compute the rhythm block)",
                     "segments: stride_s (10 s) is longer than length_s (2 s): 80% of each record lies in no window"]
    assert all(unused_classifier_settings(load_config(name)) == [] for name in preset_names())
    mine.write_text('extends = "cinc2017"\n[classes]\nafib = ["A"]\nother = ["O"]\n')
    with pytest.warns(UserWarning, match="mine.toml: its \\[classes\\] replaces preset cinc2017's whole, so normal is no class"):
        assert load_config(mine).class_names == ["afib", "other"]


def test_a_folder_or_a_json_list_given_as_the_config_is_told_as_such(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"{run} is a folder, not a config file .a run's. its settings are {run}/config.json"):
        load_config(run)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]\n")
    with pytest.raises(ConfigError, match="JSON settings must be one object of tables, got list"):
        load_config(listed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper4").mkdir()  # a folder named as a preset (a data folder) leaves the preset as it was
    assert load_config("paper4").name == "paper4"


def test_the_values_next_to_the_refused_ones_still_load():
    cfg = load_config("paper4", {
        "sampling": {"per_class": {"normal": 1}},
        "spectrogram": {"window": "hamming", "fmin": 10.0, "fmax": 10.8},  # holds the 10.74-Hz bin
        "classifier": {"gamma": 0.01, "gamma_grid": ["scale", "auto", 1]},
        "segments": {"stride_s": 0.004},
    })
    assert cfg.class_cap("normal") == 1 and cfg.class_cap("afib") == cfg.sampling.max_per_class == 1850
    assert cfg.classifier.gamma == 0.01 and cfg.classifier.gamma_grid == ["scale", "auto", 1.0]
    assert cfg.segment_stride == 1
    from ecgpipe.spectrogram import spectrogram_frequencies

    assert len(spectrogram_frequencies(cfg.segments.target_fs, cfg.spectrogram)) == 1


def test_a_toml_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes((BASE + "description = 'Holter r\u00e9sum\u00e9'\n").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: not UTF-8 text .*TOML files must be UTF-8"):
        load_config(path)


def test_endpoint_decision_settings_are_validated():
    base = {"databases": {"mitdb": {}}, "classes": {"normal": ["(N"], "afib": ["(AFIB"]}}
    cfg = config_from_dict({**base, "endpoints": {"af": {"classes": ["afib"]}}})
    assert (cfg.endpoints["af"].decision_windows, cfg.endpoints["af"].change_penalty) == (15, 4.0)
    for bad, message in (({"decision_windows": 4}, "even"), ({"decision_windows": 0}, "greater than or equal to 1"),
                         ({"change_penalty": -1}, "greater than or equal to 0"), ({"change_penalty": float("inf")}, "finite")):
        with pytest.raises(ValueError, match=message):
            config_from_dict({**base, "endpoints": {"af": {"classes": ["afib"], **bad}}})


def test_a_file_that_changes_its_base_does_not_borrow_the_bases_description_as_its_own(tmp_path):
    """`extends = "paper4-best"` with pca = 16 was described as "... PCA-128 RBF SVM ..." in its report."""
    (tmp_path / "small.toml").write_text('extends = "paper4-best"\n[classifier]\npca = 16\n')
    cfg = load_config(tmp_path / "small.toml")
    assert cfg.description.startswith(f"preset paper4-best with the changes of {tmp_path / 'small.toml'}: ")
    (tmp_path / "named.toml").write_text('extends = "paper4-best"\nname = "mine"\n')  # a new name alone changes nothing
    assert load_config(tmp_path / "named.toml").description == load_config("paper4-best").description
    (tmp_path / "own.toml").write_text('extends = "paper4-best"\ndescription = "mine"\n[classifier]\npca = 16\n')
    assert load_config(tmp_path / "own.toml").description == "mine"


def test_classifier_settings_that_do_nothing_are_named(tmp_path, capsys):
    """A setting the classifier never reads (inner_choice without tune, a kernel for gradient boosting, PCA of a
    rhythm-only row...) is named with the reason, by `ecgpipe config` and by a run's preflight (a warning: a config
    that extends a preset inherits its settings); defaults and every preset say nothing; `unset` silences it."""
    from ecgpipe.classifier_settings import ClassifierSettings
    from ecgpipe.cli import main
    from ecgpipe.orchestration.preflight import preflight, unused_classifier_settings
    from ecgpipe.sources import DataSourceError

    assert ClassifierSettings().unused_settings() == []
    assert ClassifierSettings(tune=True, inner_choice="one_se", C_grid=[1.0, 2.0]).unused_settings() == []
    assert ClassifierSettings(kind="hgb", learning_rate=0.1, inputs="rhythm", level="record",
                              record_stats=["mean", "max"]).unused_settings() == []
    unused = ClassifierSettings(inner_choice="one_se", C_grid=[1.0]).unused_settings()
    assert [u.split(" =")[0] for u in unused] == ["C_grid", "inner_choice"]
    assert "tune = true" in unused[0]
    unused = ClassifierSettings(kind="hgb", kernel="linear", C=1.0, max_iter=100).unused_settings()
    assert [u.split(" =")[0] for u in unused] == ["C", "kernel"]
    assert [u.split(" =")[0] for u in ClassifierSettings(kind="logreg", max_iter=50, gamma=0.1).unused_settings()] == [
        "max_iter", "gamma"]
    assert [u.split(" =")[0] for u in ClassifierSettings(kernel="linear", gamma=0.1, tune=True).unused_settings()] == [
        "gamma"]
    assert [u.split(" =")[0] for u in ClassifierSettings(inputs="rhythm", pca=8, rhythm_weight=0.5,
                                                         record_stats=["max"]).unused_settings()] == [
        "pca", "rhythm_weight", "record_stats"]
    assert [u.split(" =")[0] for u in ClassifierSettings(kind="hgb", inputs="cnn+rhythm", pca=8,
                                                         rhythm_weight=0.5).unused_settings()] == ["rhythm_weight"]
    for name in preset_names():
        assert unused_classifier_settings(load_config(name)) == [], name

    path = _write(tmp_path, BASE + """
[rhythm]
enabled = true
[[sweep.classifiers]]
kind = "svc"
[[sweep.classifiers]]
kind = "hgb"
inputs = "rhythm"
inner_choice = "one_se"
""")
    cfg = load_config(path)
    (line,) = unused_classifier_settings(cfg)
    assert line.startswith("sweep.classifiers[1] (RR only GradBoost") and "inner_choice = 'one_se'" in line
    assert main(["config", str(path)]) == 0
    assert f"ecgpipe: warning: {line}\n" in capsys.readouterr().err
    # a run warns before anything else is checked (here: a data folder that does not exist)
    with pytest.warns(UserWarning, match=re.escape(line)), pytest.raises(DataSourceError, match="does not exist"):
        preflight(cfg, tmp_path / "no-such-folder")
    child = tmp_path / "child.toml"
    child.write_text(f'extends = "{path.name}"\nunset = ["sweep"]\n[classifier]\nkind = "hgb"\ninputs = "rhythm"\n'
                     'inner_choice = "one_se"\npca = 4\n')
    assert [u.split(" =")[0] for u in load_config(child).classifier.unused_settings()] == ["inner_choice", "pca"]
    quiet = tmp_path / "quiet.toml"
    quiet.write_text('extends = "child.toml"\nunset = ["classifier.inner_choice", "classifier.pca"]\n')
    assert unused_classifier_settings(load_config(quiet)) == []


def test_the_json_that_ecgpipe_config_prints_and_a_run_s_saved_config_json_are_configs_too(tmp_path, capsys):
    """`ecgpipe config NAME > my.json`, edited, is a config (it was refused as "not valid TOML"), and so is a run's
    saved config.json: the settings a run used can be given back as they are."""
    import json

    from ecgpipe.cli import main

    assert main(["config", "paper4-best"]) == 0
    printed = capsys.readouterr().out
    mine = tmp_path / "mine.json"
    mine.write_text(printed.replace('"n_splits": 10', '"n_splits": 5'))
    cfg = load_config(mine)
    assert cfg.cv.n_splits == 5 and cfg.model_copy(update={"cv": load_config("paper4-best").cv}) == load_config("paper4-best")
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps({"config": json.loads(printed), "data_dir": "/data"}))
    assert load_config(saved) == load_config("paper4-best")
    broken = tmp_path / "broken.json"
    broken.write_text('{"cv": {"n_splits": 5,}}')
    with pytest.raises(ConfigError, match=r"broken.json: neither TOML nor JSON"):
        load_config(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(printed.replace('"n_splits": 10', '"n_splitz": 10'))
    with pytest.raises(ConfigError, match=r"cv.n_splitz: unknown key"):
        load_config(wrong)



def test_a_pilot_set_by_a_config_file_is_said_before_the_run(tmp_path, capsys):
    """A pilot run's saved config.json keeps its --max-records: given back as a config it runs a pilot again, so
    `ecgpipe run` says so (not when --max-records asks for the pilot, nor for a config without one)."""
    import argparse
    import json

    from ecgpipe.cli_checks import note_a_pilot_from_a_file

    saved = tmp_path / "config.json"
    pilot = load_config("paper4", {"run": {"max_records": 3}})
    saved.write_text(json.dumps({"config": pilot.model_dump(mode="json"), "data_dir": "/data"}))
    note_a_pilot_from_a_file(argparse.Namespace(config=str(saved), max_records=None), load_config(saved))
    assert f"{saved} sets run.max_records = 3: a pilot of at most that many records" in capsys.readouterr().err
    note_a_pilot_from_a_file(argparse.Namespace(config=str(saved), max_records=3), load_config(saved, {"run": {"max_records": 3}}))
    note_a_pilot_from_a_file(argparse.Namespace(config="paper4", max_records=None), load_config("paper4"))
    assert capsys.readouterr().err == ""


def test_an_rbf_svc_whose_kernel_matrix_cannot_fit_a_worker_is_named_before_the_cnn():
    """An RBF SVC row fits libsvm on a dense n x n kernel over every window (8 n^2 bytes: 80 GB at 100 000): a worker
    killed for memory was retried and the run ended asking to run again, after its spectrograms and CNN features.
    The flow warns of it once the segment table is known (every row may be done already), naming the row and the cures."""
    from ecgpipe.orchestration.preflight import kernel_memory_problem

    cfg = load_config("paper4-best")  # one RBF SVC row, window-level
    assert kernel_memory_problem(cfg, 7069, 67, 24 * 2**30) is None  # its 7069 windows: 0.4 GB
    problem = kernel_memory_problem(cfg, 100_000, 3000, 24 * 2**30)
    assert problem.startswith("[classifier] (an RBF SVC) would fit a 100000 x 100000 kernel matrix: 75 GiB, more than a worker's 24 GiB")
    assert "max_per_class" in problem and "'logreg'" in problem
    assert kernel_memory_problem(cfg, 7069, 67, None) is None  # the machine's memory when no worker states a limit
    assert "kernel matrix" in kernel_memory_problem(cfg, 10**7, 3000, None)  # 745 TiB: no machine has it
    # a record-level row's kernel is over records; a linear row has none
    cinc = load_config("cinc2017")  # gradient boosting rows (kernel 'rbf' is only the field's default) and one RBF SVC
    assert kernel_memory_problem(cinc, 18_357, 5970, 24 * 2**30) is None  # all of CinC 2017: 2.5 GiB
    assert kernel_memory_problem(cinc, 1_000_000, 300_000, 24 * 2**30).startswith("sweep.classifiers[2] (an RBF SVC)")
    sweep = config_from_dict({**cfg.model_dump(mode="json"), "sweep": {"classifiers": [{"kind": "logreg"}, {"kind": "svc"}]}})
    assert kernel_memory_problem(sweep, 100_000, 3000, 24 * 2**30).startswith("sweep.classifiers[1] (an RBF SVC)")
