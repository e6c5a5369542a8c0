import json

from conftest import TINY


def metrics_of(tmp_path):
    return json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_ppp_end_to_end_logs_its_steps_and_reuses_fisher(cli, tmp_path):
    args = ["method=ppp", "method.forget_samples=12", *TINY]
    first = cli(args)
    assert "[cache] saved fisher_forget" in first.stdout
    m = metrics_of(tmp_path)["metrics"]
    assert m["ppp/gamma"] >= 1.0 and len(m["ppp/neighbours"]) == 2 and "six" not in m["ppp/neighbours"]
    assert m["ppp/n_shared"] + m["ppp/n_buffer"] + m["ppp/n_core"] > 3_000_000
    assert m["ppp/n_forget_samples"] == 12 and m["time/unlearn_s"] > 0
    for key in ("forget/i2t_map", "forget/t2i_map", "retain/i2t_map", "retain/t2i_map"):
        assert 0.0 <= m[key] <= 1.0

    second = cli([*args, "skip_finished=false"])
    for artefact in ("original model", "prototypes", "fisher_forget", "fisher_neighbour", "fisher_retain"):
        assert f"[cache] reusing {artefact}" in second.stdout
    again = metrics_of(tmp_path)["metrics"]
    assert {k: v for k, v in again.items() if not k.startswith(("time/", "mem/"))} == {
        k: v for k, v in m.items() if not k.startswith(("time/", "mem/"))
    }


def test_ssd_and_fisher_forgetting_run(cli, tmp_path):
    cli(["method=ssd", *TINY])
    ssd = metrics_of(tmp_path)["metrics"]
    assert ssd["ssd/n_buffer"] > 0 and ssd["ssd/n_core"] == 0
    cli(["method=fisher_zero", *TINY])
    assert metrics_of(tmp_path)["metrics"]["fisher_zero/n_buffer"] > 0
