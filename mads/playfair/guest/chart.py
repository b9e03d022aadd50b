# Playfair's chart program: runs inside a WASM cell. Reads /input/spec.json and /input/data.csv,
# writes the chart to the working directory under spec["file"]. Nothing else leaves the cell.
import json
import os
import shutil

os.makedirs(".mpl", exist_ok=True)
os.environ["MPLCONFIGDIR"] = os.path.abspath(".mpl")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

with open("/input/spec.json", encoding="utf-8") as handle:
    spec = json.load(handle)
frame = pd.read_csv("/input/data.csv")

kind, x, ys, hue = spec["kind"], spec.get("x"), spec.get("y") or [], spec.get("hue")
numeric = frame.select_dtypes("number")
fig, ax = plt.subplots(figsize=(spec["width"], spec["height"]), dpi=spec["dpi"])

if kind in ("line", "area", "bar", "barh"):
    plot = frame.set_index(x)[ys] if x else frame[ys]
    plot.plot(kind=kind, ax=ax, legend=len(ys) > 1)
elif kind == "scatter":
    if hue:
        for value, group in frame.groupby(hue):
            for y in ys:
                ax.scatter(group[x], group[y], label=f"{value}" if len(ys) == 1 else f"{value} · {y}", s=18)
        ax.legend(title=hue)
    else:
        for y in ys:
            ax.scatter(frame[x], frame[y], label=y, s=18)
        if len(ys) > 1:
            ax.legend()
elif kind == "hist":
    (frame[ys] if ys else numeric).plot(kind="hist", ax=ax, alpha=0.6, bins=30)
elif kind == "box":
    (frame[ys] if ys else numeric).plot(kind="box", ax=ax)
elif kind == "pie":
    series = frame.set_index(x)[ys[0]] if x else frame[ys[0]]
    series.plot(kind="pie", ax=ax, autopct="%1.0f%%", ylabel="")
elif kind == "heatmap":
    import seaborn as sns

    sns.heatmap((frame[ys] if ys else numeric).corr(), annot=True, fmt=".2f", cmap="vlag", center=0, ax=ax)

if x and kind in ("line", "area", "scatter") and pd.api.types.is_integer_dtype(frame[x]):
    # Years, counts, sample numbers: ticks on whole values only (never "2020.5").
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
if spec.get("title"):
    ax.set_title(spec["title"])
if spec.get("xlabel"):
    ax.set_xlabel(spec["xlabel"])
if spec.get("ylabel"):
    ax.set_ylabel(spec["ylabel"])
fig.tight_layout()
fig.savefig(spec["file"], format=spec["format"])
shutil.rmtree(".mpl", ignore_errors=True)
print(json.dumps({"rows": len(frame), "columns": list(frame.columns)}))
