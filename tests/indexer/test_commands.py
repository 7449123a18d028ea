"""The CLI as a user runs it: `semsearch build`, `search`, `eval` on small BEIR files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from semsearch.cli import main

CORPUS = [
    {
        "_id": "a",
        "title": "Vitamin D",
        "text": "Vitamin D deficiency is associated with fractures.",
        "metadata": {"lang": "en", "year": 2020},
    },
    {"_id": "b", "title": "Statins", "text": "Statins lower LDL cholesterol."},
    {"_id": "c", "title": "Sleep", "text": "Short sleep impairs memory consolidation."},
    {
        "_id": "d",
        "title": "Order",
        "text": "Order ORD-77812-X shipped to Berlin.",
        "metadata": {"lang": "de", "tags": ["order"]},
    },
]


@pytest.fixture
def beir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("SEMSEARCH_DATA_DIR", str(tmp_path / "data"))
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps(d).encode() for d in CORPUS]
    lines.insert(1, b'{"_id": "bad", "text": "caf\xff\xfe broken bytes"}')  # not UTF-8
    lines.insert(2, b"{not json")
    lines.append(json.dumps({"_id": "empty", "title": "", "text": "  "}).encode())
    corpus.write_bytes(b"\n".join(lines) + b"\n")
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"_id": "1", "text": "vitamin d and bone fractures"},
                {"_id": "2", "text": "cholesterol drugs"},
            ]
        )
    )
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\ta\t1\n2\tb\t1\n")
    return {"corpus": corpus, "queries": queries, "qrels": qrels, "root": tmp_path}


def test_build_then_search(beir: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    index = beir["root"] / "idx"
    assert main(["build", "--corpus", str(beir["corpus"]), "--index-dir", str(index)]) == 0
    out, err = capsys.readouterr()
    assert "4 documents" in out
    assert (
        "line 2: not valid UTF-8" in err
        and "line 3: not valid JSON" in err
        and "rejected empty" in err
    )
    assert (
        main(["search", "--index-dir", str(index), "--mode", "hybrid", "--json", "ORD-77812-X"])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["results"][0]["doc_id"] == "d"
    assert result["fusion"] == {"weights": {"vector": 1.0, "lexical": 1.0}, "rrf_k": 60}
    tuned = ["search", "--index-dir", str(index), "--json", "--lexical-weight", "2", "--rrf-k", "9"]
    assert main([*tuned, "vitamin d"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["fusion"] == {"weights": {"vector": 1.0, "lexical": 2.0}, "rrf_k": 9}
    assert main(["search", "--index-dir", str(index), "--rrf-k", "0", "x"]) == 1
    assert "rrf_k must be an integer from 1" in capsys.readouterr().err
    assert main(["search", "--index-dir", str(index), "--mode", "bm25", "--rrf-k", "5", "x"]) == 1
    assert "--mode hybrid only" in capsys.readouterr().err
    assert (
        main(["search", "--index-dir", str(index), "--min-score", "0.99", "quantum gravity"]) == 0
    )
    assert "no results" in capsys.readouterr().out
    assert main(["search", "--index-dir", str(index), "-k", "0", "x"]) == 1
    assert "positive integer" in capsys.readouterr().err
    search = ["search", "--index-dir", str(index), "--json"]
    assert main([*search, "--where", '{"lang": "en"}', "order vitamin"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [h["doc_id"] for h in result["results"]] == ["a"]
    assert result["results"][0]["metadata"] == {"lang": "en", "year": 2020}
    assert main([*search, "--where", '{"tags": {"$in": ["order"]}}', "shipped"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [h["doc_id"] for h in result["results"]] == ["d"]
    assert main([*search, "--where", '{"lang": {"$bad": 1}}', "x"]) == 1
    assert "unknown operator '$bad'" in capsys.readouterr().err
    assert main([*search, "--where", "{lang", "x"]) == 1
    assert "not valid JSON" in capsys.readouterr().err


def test_eval_json_and_reuse(beir: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "eval",
        "--corpus",
        str(beir["corpus"]),
        "--queries",
        str(beir["queries"]),
        "--qrels",
        str(beir["qrels"]),
        "--json",
    ]
    assert main([*args, "--mode", "vector"]) == 0
    first = capsys.readouterr()
    result = json.loads(first.out.strip().splitlines()[-1])
    assert set(result) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10", "mode", "queries"}
    assert result["mode"] == "vector" and result["queries"] == 2 and result["ndcg@10"] == 1.0
    assert "building index" in first.err
    assert main([*args, "--mode", "bm25"]) == 0
    second = capsys.readouterr()
    assert "reusing index" in second.err
    assert json.loads(second.out.strip().splitlines()[-1])["mode"] == "bm25"


def test_bad_inputs_fail_clearly(beir: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    empty = beir["root"] / "empty.jsonl"
    empty.write_text("")
    assert main(["build", "--corpus", str(empty), "--index-dir", str(beir["root"] / "x")]) == 1
    assert "no indexable documents" in capsys.readouterr().err
    assert main(["build", "--corpus", str(beir["root"] / "missing.jsonl")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["search", "--index-dir", str(beir["root"] / "nothing"), "q"]) == 1
    assert "no index" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "semsearch.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "build" in done.stdout and "eval" in done.stdout
