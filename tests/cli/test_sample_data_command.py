"""`artlora sample-data --styles`: a one-style set (the commonest real case) from the generator, in one command."""

from artlora.cli import main


def test_styles_picks_the_styles_written(tmp_path, capsys):
    assert main(["sample-data", "--out", str(tmp_path), "--count", "4", "--size", "64", "--styles", "woodcut"]) == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        f"woodcut/woodcut_{i:04d}.png" for i in range(4)
    ]
    assert "wrote 4 images" in capsys.readouterr().out


def test_an_unknown_style_is_named_with_the_choices(tmp_path, capsys):
    assert main(["sample-data", "--out", str(tmp_path), "--styles", "woodcut", "cubist"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("artlora sample-data: error: ") and "'cubist'" in err and "watercolour" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.rglob("*.png"))
