# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the pinned requirements first.
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROFILE ?= synthface
# stage 7's generator: the stage-6 run's output inside the data root (or "shipped-v1": a v9 made
# from the shipped FineTune-v1 before any v9 training)
VF_GENERATOR ?= stage6/v9/generator.pth

.PHONY: setup demo test reliability bench screenshots clean-runs

$(STAMP): requirements.txt Makefile
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# facenet-pytorch pins ancient torch/numpy/Pillow: install it without its dependencies.
	$(VPY) -m pip install --quiet --disable-pip-version-check --no-deps facenet-pytorch==2.6.0
	$(VPY) -c "import torch, torchvision, cv2, facenet_pytorch, sklearn, pandas, matplotlib, tqdm, torchinfo"
	touch $(STAMP)

setup: $(STAMP)

# Stages 1-6 of the default profile. Each stage skips finished work, so a second `make demo`
# only re-checks. Stage 5 installs the shipped runs (synthface/weights/stage5/: property CNN,
# FineTune-v1, FineTune-v3) and stage 6 the shipped FineTune-v9 (synthface/weights/stage6/v9/)
# when their settings and inputs match, and then only tests and reports.
demo: setup
	$(VPY) run_original_generator.py --profile $(PROFILE)
	$(VPY) run_cnn.py --profile $(PROFILE)
	$(VPY) run_segmentation.py --profile $(PROFILE)
	$(VPY) compute_property_scores_v2.py --profile $(PROFILE)
	$(VPY) run_property_score_cnn.py --profile $(PROFILE)
	$(VPY) run_oracle.py --profile $(PROFILE)
	$(VPY) run_stylegan_fine_tuning_v1.py --profile $(PROFILE)
	$(VPY) run_stylegan_fine_tuning_v3.py --profile $(PROFILE)
	$(VPY) run_fine_tuned_generator.py --profile $(PROFILE)
	$(VPY) run_stylegan_finetune_v9.py --profile $(PROFILE)
	$(VPY) run_vectorfind_v9.py --profile $(PROFILE) --generator $(VF_GENERATOR) --n 2000 --median-n 2000 --cases 10 --pixel-local-samples 8 --test-judges property_cnn,evaluator

test: setup
	$(VPY) -m pytest -q tests

# The fault suite with its slow kill -9 cases; writes the table of cases to docs/reliability_table.md.
reliability: setup
	OHLORA_RELIABILITY_SLOW=1 OHLORA_RELIABILITY_TABLE=docs/reliability_table.md $(VPY) -m pytest -q tests/reliability

# Re-take the README's page screenshots (docs/*_page.jpg) in the browser tests; `make test` writes
# them to a temporary folder instead.
screenshots: setup
	OHLORA_SCREENSHOTS=1 OHLORA_REQUIRE_BROWSER=1 $(VPY) -m pytest -q tests/test_labeling_browser.py tests/test_editor_browser.py

bench: setup
	$(VPY) benchmarks/bench_generator.py

clean-runs:
	rm -rf runs/$(PROFILE)
