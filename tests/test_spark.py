"""Scoring Spark DataFrames (:mod:`ocsdf.spark`) on a real local SparkSession: ``local[2]``
(two task slots, Python workers reused across tasks and jobs), UI off, on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = [
    pytest.mark.slow,
    # pyspark 4.x on pandas 3: noise from pyspark's own pandas conversions
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]

pytest.importorskip("pyspark", reason="needs pyspark: pip install 'ocsdf[spark]'")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("needs Java for a local SparkSession (no java on PATH, no JAVA_HOME)",
                allow_module_level=True)

from conftest import small_saved_model  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from ocsdf import OCSDF, InputError  # noqa: E402
from ocsdf.errors import ModelFileError  # noqa: E402
from ocsdf.estimator import conformal_pvalues  # noqa: E402
from ocsdf.spark import load_counts, score_spark_dataframe, score_udf  # noqa: E402

FEATURES = [f"f{j}" for j in range(6)]
N_ROWS, N_PARTITIONS = 4_000, 4


@pytest.fixture(scope="module")
def spark():
    """A local[2] SparkSession whose Python workers run this interpreter, stopped at the end."""
    from pyspark.sql import SparkSession

    previous = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers must import ocsdf from this venv
    session = (SparkSession.builder.master("local[2]").appName("ocsdf-test-spark")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.default.parallelism", str(N_PARTITIONS))
               .config("spark.python.worker.reuse", "true")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = previous


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """4,000 rows: an ``id`` column the model does not use, then 6 standard normal features."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(N_ROWS, len(FEATURES))), columns=FEATURES)
    df.insert(0, "id", np.arange(N_ROWS, dtype=np.int64))
    return df


@pytest.fixture(scope="module")
def saved(tmp_path_factory, frame) -> tuple[OCSDF, str]:
    """A small model calibrated at fpr=0.05 (few steps), and its folder."""
    return small_saved_model(tmp_path_factory, frame[FEATURES], 0.05, "spark")


@pytest.fixture(scope="module")
def sdf(spark, frame):
    """``frame`` as a Spark DataFrame of 4 contiguous partitions of 1,000 rows."""
    out = spark.createDataFrame(frame)
    assert out.rdd.getNumPartitions() == N_PARTITIONS
    return out


def _per_partition(model: OCSDF, X: pd.DataFrame, parts: np.ndarray, method: str) -> np.ndarray:
    """``model.<method>`` on each partition's rows (one scoring batch each), in row order."""
    out = np.empty(len(X))
    for p in np.unique(parts):
        rows = parts == p
        out[rows] = getattr(model, method)(X[rows])
    return out


def _worker_loads(spark, folder: str) -> dict[int, int]:
    """``{pid: loads of folder}`` of the Python workers that run a small job (the reused ones)."""
    def report(batches):
        for _ in batches:
            pass
        yield pd.DataFrame({"pid": [os.getpid()],
                            "loads": [load_counts().get((folder, "cpu"), 0)]})

    rows = (spark.range(0, 64, numPartitions=8).mapInPandas(report, "pid long, loads long")
            .toPandas())
    return dict(zip(rows["pid"].tolist(), rows["loads"].tolist()))


def test_dataframe_scores_equal_in_process_scores_and_each_worker_loads_once(
        spark, sdf, frame, saved):
    model, folder = saved
    scored = score_spark_dataframe(sdf, folder)
    assert scored.columns == ["id", *FEATURES, "score", "decision", "label", "pvalue"]
    assert [t for _, t in scored.dtypes[-4:]] == ["double", "double", "bigint", "double"]
    got = scored.withColumn("part", F.spark_partition_id()).toPandas()
    # collected partition by partition, each in its order: the rows come back as they went in
    assert np.array_equal(got["id"].to_numpy(), frame["id"].to_numpy())
    assert got["part"].nunique() == N_PARTITIONS
    assert np.array_equal(got[FEATURES].to_numpy(), frame[FEATURES].to_numpy())
    X, parts = frame[FEATURES], got["part"].to_numpy()
    # Each partition (1,000 rows, one Arrow batch) is one scoring batch: bit for bit the
    # in-process methods on that partition, and (the same here) on the whole table up to a
    # last-bit rounding another BLAS might do differently with another batch size.
    score = _per_partition(model, X, parts, "score_samples")
    assert np.array_equal(got["score"].to_numpy(), score)
    assert np.abs(got["score"].to_numpy() - model.score_samples(X)).max() <= 1e-12
    assert np.array_equal(got["decision"].to_numpy(),
                          _per_partition(model, X, parts, "decision_function"))
    assert np.array_equal(got["label"].to_numpy(), _per_partition(model, X, parts, "predict"))
    assert set(np.unique(got["label"])) <= {-1, 1} and (got["label"] == -1).any()
    assert np.array_equal(got["pvalue"].to_numpy(),
                          _per_partition(model, X, parts, "predict_pvalue"))
    # a second scoring job, through a new UDF (Spark's own cache is per UDF), reuses the models
    again = score_spark_dataframe(sdf, folder).select("id", "score").toPandas()
    assert np.array_equal(again["score"].to_numpy(), score)
    loads = _worker_loads(spark, folder)
    assert os.getpid() not in loads  # Python workers are processes of their own
    # 8 partitions were scored over 2 jobs, yet no worker loaded the model twice; the reused
    # workers that scored report their one load
    assert max(loads.values()) == 1, loads
    assert load_counts()[(folder, "cpu")] == 1  # the driver's own load, for the schema


def test_score_udf_takes_a_struct_or_an_array_of_the_features(spark, sdf, frame, saved):
    model, folder = saved
    udf = score_udf(folder, batch_size=300)  # batches of 300 rows inside each partition
    out = sdf.select("id", udf(F.struct(*FEATURES)).alias("s"),
                     F.spark_partition_id().alias("part"))
    assert out.schema["s"].dataType.simpleString() == \
        "struct<score:double,decision:double,label:bigint,pvalue:double>"
    got = out.select("id", "part", "s.*").toPandas()
    # an array<double> column, in a job of its own (two UDFs in one job need two workers a task)
    from_array = sdf.select(udf(F.array(*FEATURES)).alias("a")).select("a.score").toPandas()
    X, parts = frame[FEATURES], got["part"].to_numpy()
    batches = np.concatenate([[0], np.cumsum(np.unique(parts, return_counts=True)[1])])
    expected = np.concatenate([model.score_samples(X[a:b][s:s + 300])
                               for a, b in zip(batches[:-1], batches[1:])
                               for s in range(0, b - a, 300)])
    assert np.array_equal(got["id"].to_numpy(), frame["id"].to_numpy())
    assert np.array_equal(got["score"].to_numpy(), expected)
    assert np.array_equal(from_array["score"].to_numpy(), expected)
    assert np.array_equal(got["decision"].to_numpy(), expected - model.offset_)
    assert np.array_equal(got["label"].to_numpy(), np.where(expected >= model.offset_, 1, -1))
    assert np.array_equal(got["pvalue"].to_numpy(),
                          conformal_pvalues(model.calibration_scores_, expected))


def test_columns_by_other_names_or_positions_and_an_uncalibrated_model(
        spark, frame, tmp_path):
    X = frame[FEATURES]
    model = OCSDF(n_steps=10, width=16, depth=2, random_state=1).fit(X.to_numpy())  # no names
    model.save(tmp_path / "plain")
    renamed = spark.createDataFrame(
        frame.rename(columns={f: f"in.{f}" for f in FEATURES}).assign(note="x")).coalesce(1)
    names = [f"in.{f}" for f in FEATURES]  # dots: read as literal names, not struct fields
    by_name = score_spark_dataframe(renamed, tmp_path / "plain", columns=names)
    assert by_name.columns == ["id", *names, "note", "score", "decision", "label"]
    by_position = score_spark_dataframe(renamed, tmp_path / "plain", columns=range(1, 7))
    got = by_name.toPandas()
    assert np.array_equal(got["score"].to_numpy(), model.score_samples(X.to_numpy()))
    assert np.array_equal(by_position.toPandas()["score"].to_numpy(), got["score"].to_numpy())


def test_wrong_inputs_fail_on_the_driver_in_one_line(spark, sdf, frame, saved):
    _, folder = saved
    with pytest.raises(InputError, match=r"lacks columns the model was fitted on: \['f3'\]") \
            as err:
        score_spark_dataframe(sdf.drop("f3"), folder)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"column 'f2' is string, not numeric"):
        score_spark_dataframe(sdf.withColumn("f2", F.col("f2").cast("string")), folder)
    with pytest.raises(InputError, match=r"already has column 'score'.*drop or rename"):
        score_spark_dataframe(sdf.withColumn("score", F.lit(0.0)), folder)
    with pytest.raises(InputError, match="has 2 feature columns but the model expects 6"):
        score_spark_dataframe(sdf, folder, columns=["f0", "f1"])
    with pytest.raises(InputError, match="has no column 'nope'"):
        score_spark_dataframe(sdf, folder, columns=[*FEATURES[:5], "nope"])
    with pytest.raises(TypeError, match="pyspark.sql.DataFrame.*createDataFrame"):
        score_spark_dataframe(frame, folder)
    with pytest.raises(ModelFileError):
        score_spark_dataframe(sdf, os.path.join(folder, "nope"))


def test_a_null_feature_fails_the_job_naming_the_feature(spark, sdf, saved):
    _, folder = saved
    holed = sdf.withColumn("f4", F.when(F.col("id") == 10, None).otherwise(F.col("f4")))
    with pytest.raises(Exception, match=r"missing or infinite values.*'f4'.*data row 11"):
        score_spark_dataframe(holed, folder).select("score").collect()


def test_missing_pyspark_is_a_one_line_import_error(monkeypatch, sdf, saved):
    monkeypatch.setitem(sys.modules, "pyspark.sql.functions", None)
    with pytest.raises(ImportError, match=r"needs pyspark.*pip install 'ocsdf\[spark\]'") as err:
        score_spark_dataframe(sdf, saved[1])
    assert "\n" not in str(err.value)


def test_importing_the_module_does_not_import_pyspark():
    code = ("import sys, ocsdf.spark; assert 'pyspark' not in sys.modules; "
            "import pathlib, pyspark; assert not pathlib.Path(pyspark.__file__).is_relative_to("
            "pathlib.Path(ocsdf.spark.__file__).parent), pyspark.__file__; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-300:]
