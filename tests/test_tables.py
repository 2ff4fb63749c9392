"""Reading user tables: tricky but valid files read correctly; bad ones are refused with
the file, row, column and value named."""
import pandas as pd
import pytest

from finetuning.errors import StageError
from finetuning.data.layouts import read_examples
from finetuning.data.tables import Columns, read_table, to_examples

LABELS = ["negative", "positive"]


def examples(path, text="text", label="label"):
    return to_examples(read_table(path), path, Columns(text, label, LABELS))


def test_csv_with_bom_crlf_quotes_and_embedded_newlines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label\r\n"said ""hi""\r\nthen left",positive\r\n'
                     b'plain,0\r\n')
    frame = examples(path)
    assert frame["text"].tolist() == ['said "hi"\r\nthen left', "plain"]
    assert frame["label"].tolist() == [1, 0]


@pytest.mark.parametrize("name, write", [
    ("d.tsv", lambda p: p.write_text("text\tlabel\tx\nit's \"fine\"\t1\t\n")),
    ("d.jsonl", lambda p: p.write_text('{"text": "ok", "label": "positive"}\n')),
    ("d.json", lambda p: p.write_text('[{"text": "ok", "label": 1}]')),
    ("d.parquet", lambda p: pd.DataFrame({"text": ["ok"], "label": [1]}).to_parquet(p)),
])
def test_every_format_reads(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    assert examples(path)["label"].tolist() == [1]


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,1\ncaf\xe9,0\n")
    with pytest.raises(StageError, match=r"d.csv: line 3 is not valid UTF-8 \(byte 0xe9"):
        read_table(path)


def test_empty_and_header_only(tmp_path):
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("text,label\n")
    with pytest.raises(StageError, match="e.csv is empty"):
        read_table(tmp_path / "e.csv")
    with pytest.raises(StageError, match="h.csv has a header but no rows"):
        read_table(tmp_path / "h.csv")


def test_missing_column_lists_what_the_file_has(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("review,label\nok,1\n")
    with pytest.raises(StageError, match=r"missing column\(s\) \['text'\].*\['review', 'label'\]"):
        examples(path)
    assert examples(path, text="review")["text"].tolist() == ["ok"]


def test_label_outside_the_set_names_row_and_value(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,positive\nb,neutral\n")
    with pytest.raises(StageError, match=r"row 2, column 'label' has label 'neutral'"):
        examples(path)


def test_integer_labels_out_of_range_are_refused(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 2}\n')
    with pytest.raises(StageError, match="has label 2"):
        examples(path)


def test_parquet_with_wrong_text_dtype(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": [1, 2], "label": [0, 1]}).to_parquet(path)
    with pytest.raises(StageError, match=r"row 1, column 'text' holds int.*expected text"):
        examples(path)


def test_read_examples_concatenates_a_folder(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\nx,0\n")
    (tmp_path / "b.jsonl").write_text('{"text": "y", "label": "positive"}\n')
    assert read_examples(tmp_path, Columns("text", "label", LABELS))["text"].tolist() == ["x", "y"]


@pytest.mark.parametrize("suffix, write, bad_row, shown", [
    (".jsonl", lambda p: p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": NaN}\n'),
     2, "nan"),
    (".json", lambda p: p.write_text('[{"text": "a", "label": 0}, {"text": "b", "label": null}]'),
     2, "nan|None"),
    (".jsonl", lambda p: p.write_text('{"text": "a", "label": Infinity}\n'), 1, "inf"),
    (".jsonl", lambda p: p.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 0.5}\n'),
     2, "0.5"),
    (".parquet", lambda p: pd.DataFrame({"text": ["a", "b", "c"],
                                         "label": [0.0, 1.0, float("nan")]}).to_parquet(p),
     3, "nan"),
    (".csv", lambda p: p.write_text("text,label\na,0\nb,\u00b2\n", encoding="utf-8"), 2,
     "'\u00b2'"),
    (".csv", lambda p: p.write_text("text,label\na,\u0661\n", encoding="utf-8"), 1, "'\u0661'"),
])
def test_labels_that_are_no_index_are_refused_with_file_and_row(tmp_path, suffix, write,
                                                                bad_row, shown):
    path = tmp_path / f"d{suffix}"
    write(path)
    with pytest.raises(StageError, match=rf"d\{suffix}: row {bad_row}, column 'label' has "
                       rf"label ({shown})"):
        examples(path)


def test_whole_number_floats_are_indices(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [0.0, 1.0]}).to_parquet(path)
    assert examples(path)["label"].tolist() == [0, 1]


def test_an_error_names_the_users_own_source(tmp_path):
    (tmp_path / "000-reviews.csv").write_text("text,label\nx,maybe\n")
    with pytest.raises(StageError, match=r"000-reviews.csv: row 1, .* \(fetched from "
                       r"fetch.data = /home/me/reviews.csv\)"):
        read_examples(tmp_path, Columns("text", "label", LABELS),
                      "fetch.data = /home/me/reviews.csv")
