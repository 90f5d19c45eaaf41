"""Hand-labelling tool: a local page to label stage-1 images for stage 2 (gender, quality, age, glasses).

Shows the stage-1 images one at a time; a key per label value (g/d quality good/defect, f/m
gender female/male, o/y age old/young, e/n eyeglasses/none), Backspace or u undo, Space or →
skip, ← previous, j jump. Every label is written at once (atomically) to the hand-label CSVs
stage 2 reads (by default the profile's ``stage2.label_files``) and a sidecar
``<file>.labeling.json`` holding unfinished labels, skips and the position, so a restart
resumes where it stopped. On synthface the page can replay the world's emulated labeller, and
``--check-emulated`` compares the written labels with the ones it gives. Examples:
    python run_labeling.py                          # then open http://127.0.0.1:8765/labeling
    python run_labeling.py --profile celeba256 --count 500
    python run_labeling.py --labels-quality-gender my_qg.csv --labels-age-glass my_ag.csv
    python run_labeling.py --check-emulated         # compare the files with the emulated labeller
"""
import argparse
import sys

from pipeline.entry import check_environment, guarded  # first: checks the environment
from pipeline.config import add_setting_flags, constants, resolve
from pipeline import profiles

PROFILE = profiles.DEFAULT_PROFILE
HOST = "127.0.0.1"          # localhost only; another address exposes the labels to the network
PORT = 8765
COUNT = 2000                # label the first COUNT stage-1 images (the original labelled 2,000); 0: all
GROUPS = ("quality_and_gender", "age_and_glass")   # label files to write (stage 2 reads both)
IMPORT_FILES = False        # True: start from the CSVs as they are (after editing them by hand)
CHECK_EMULATED = False      # True: compare the files with the emulated labeller and exit (synthface)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    ap.add_argument("--labels-quality-gender", default=None, help="hand-label CSV (img_name, quality, gender)")
    ap.add_argument("--labels-age-glass", default=None, help="hand-label CSV (img_name, age, glass)")
    ap.add_argument("--stage1", default=None, help="stage-1 folder (default: <data root>/stage1)")
    args = ap.parse_args(argv)
    cfg = resolve(constants(globals()), None, None, args)

    # imported after parsing: --help answers without loading pandas, torch and the web stack
    from web.app import compare, labeling_app, serve

    if not 0 <= cfg["port"] < 65536:
        ap.error(f"--port {cfg['port']} is not a TCP port (0..65535)")
    files = {"quality_and_gender": args.labels_quality_gender, "age_and_glass": args.labels_age_glass}
    try:
        profile = profiles.load_profile(args.profile)
        app, store, reference = labeling_app(profile, args.stage1, {g: f for g, f in files.items() if f},
                                             cfg["groups"], cfg["count"] or None, cfg["import_files"])
    except (ValueError, RuntimeError) as exc:      # unknown profile, unfinished stage 1, bad label file or sidecar
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    p = store.progress()
    print(f"labelling {p['total']} images of {profile.name}: {p['labelled']} labelled; files "
          + ", ".join(str(f) for f in store.files.values()) + f"; state {store.sidecar}")
    if cfg["check_emulated"]:
        if reference is None:
            raise SystemExit(f"profile {profile.name} has no emulated labeller")
        r = compare(store.labels_frame(), reference, store.properties)
        print(f"{r['images']} labelled images against the emulated labeller: "
              + ", ".join(f"{q} {r[q]['agree']}/{r[q]['of']}" for q in store.properties)
              + ("; all equal" if r["all_equal"] else ""))
        raise SystemExit(0 if r["all_equal"] else 1)
    serve(app, cfg["host"], cfg["port"])


if __name__ == "__main__":
    check_environment(("fastapi", "uvicorn"))
    guarded(main)
