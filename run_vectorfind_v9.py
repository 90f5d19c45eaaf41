"""Stage 7: VectorFind-v9 — eyes / mouth / pose directions in the v9 generator and the original's test.

    python run_vectorfind_v9.py                                   # SVM at mapping_split2, n = 20,000, 100 cases
    python run_vectorfind_v9.py --method gradient --point w --n 4000
    python run_vectorfind_v9.py --method mixed --point mapping_split1
    python run_vectorfind_v9.py --generator shipped-v1 --n 2000 --cases 10     # before stage 6 has run
    python run_vectorfind_v9.py --sweep                           # the issue's grid, one aggregate table

Writes ``<data root>/stage7/``: the shared sample cache (``samples/``), the medians file, one folder
per run (``runs/<method>_<point>_n<n>_x<scale>/``: the original's vector CSVs, test files and
per-case CSVs, the QA re-test, ``metrics.json``, ``report.md``), the original's aggregate logs
(``test_result/``) and the sweep table (``sweep/``). A finished run is not repeated; an
interrupted one resumes (sampling by chunk, the test by case).

The constants below are the values that run; the profile's ``stage7`` block overrides them by
name (``alpha_scale``: the α grids were chosen for the original's w scale), flags override both
(``--help``). Code: ``stages/vectorfind.py``.
"""
import argparse

from pipeline.entry import guarded  # first: a missing package says how to set up
from pipeline.config import add_setting_flags, constants
from stages import vectorfind

PROFILE = "synthface"
GENERATOR = "stage6/v9/generator.pth"   # v9 generator (inside the data root), or "shipped-v1"
GENERATOR_KEY = ""                   # entry of the checkpoint file ("" = the file is the state dict / its only entry)
METHOD = "svm"                       # svm | gradient | mixed
POINT = "mapping_split2"             # w | mapping_split1 | mapping_split2
N = 20000                            # samples for fitting (the original's sweeps: 4K … 80K, finals 160K / 240K)
RATIO = 0.2                          # top / bottom share of each group (SVM)
CASES = 100                          # test cases (the original's sweeps: 100)
STOP_AT = 0                          # stop once this many cases passed (0: never; the original's finals: 60)
SEED = 0                             # sampling, SVM shuffles, NN training, test cases (>= 0; every run is seeded)
RNG_ORDER = "seeded"                 # seeded (per-sample streams, one shared cache) | original (its RNG order, no cache)
CONDITIONAL = False                  # SVM: each group's directions orthogonal to each other; gradient / mixed: each case's
#                                      MLP gradients orthogonal at its mid vector (local; not in the original). Folder _cond
CONDITION_SIDE = ()                  # with CONDITIONAL, also orthogonal to these scores (SVM: their least-squares read-outs;
#                                      gradient: their MLPs' gradients at the case), e.g. hair_color,evaluator/old
PIXEL_LOCAL = False                  # SVM (and mixed's SVM part): eyes / mouth directions whose image change is the
#                                      fitted one's inside their own parser region and none outside (not in the original;
#                                      vectorfind/pixel_local.py). Folder _pl<λ>
PIXEL_LOCAL_LAMBDA = 0.001           # ridge toward the fitted direction, in the metric's mean eigenvalue (large: the fitted one)
PIXEL_LOCAL_SAMPLES = 32             # images the pixel-local metric is summed over (257 renders each at w)
ALPHA_SCALE = 1.0                    # multiplies the original's α grids (profile stage7 sets it per generator scale)
MEDIAN_N = 20000                     # samples the group medians come from (the original: 20,000)
FIT_JUDGE = "property_cnn"           # judge of the sampled images: property_cnn (the original's) | evaluator
TEST_JUDGES = ("property_cnn", "evaluator", "parsing")   # judges of the test images, side by side
HAIRSTYLE_JUDGE = "evaluator"        # where the property CNN's missing hairstyle output comes from (groups only)
JPEG = True                          # the test's JPEG round trip (OpenCV quality 95), as the original
DROPOUT = False                      # the original's train-mode dropout (property CNN, gradient MLPs)
DROPOUT_SEED = 0                     # -1: unseeded dropout (the original)
NN_MAX_EPOCHS = 1000                 # gradient MLPs (the original: 1000, patience 15)
BATCH_SIZE = 50                      # mapping rows and judge images per call (the sample cache was made with 50)
IMAGE_BATCH = 10                     # images per synthesis call: the same images at any value; 10 is the fastest per image
WORKERS = 2                          # sample chunks / test cases made at once (threads of one torch thread each)
INFERENCE_PATH = "exact"             # synthesis path: exact (bit-identical to plain, faster) | plain | relaxed (within rounding)
SWEEP_ROWS = ("svm:mapping_split2:4000", "svm:w:4000", "svm:mapping_split1:4000",
              "svm:mapping_split2:20000", "svm:w:20000", "svm:mapping_split1:20000",
              "gradient:w:4000", "gradient:mapping_split1:4000", "gradient:mapping_split2:4000",
              "mixed:mapping_split1:20000", "gradient:w:20000", "gradient:mapping_split1:20000",
              "gradient:mapping_split2:20000", "svm:mapping_split2:80000", "svm:w:80000", "svm:mapping_split1:80000")
SWEEP = False                        # run SWEEP_ROWS (method:point:n[:α-scale multiplier]) instead of one run
THREADS = 0                          # torch intra-op threads (0: torch's default)
PROGRESS = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=PROFILE)
    add_setting_flags(ap, constants(globals()))
    args = ap.parse_args(argv)
    vectorfind.main(args.profile, constants(globals()), args)


if __name__ == "__main__":
    guarded(main)   # user errors: one "error: ..." line, exit code 2
