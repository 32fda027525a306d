# Two commands do all the set-up on a fresh machine:
#   make demo   synthetic offline bucket -> ingest -> store summary -> HVGs -> short training run + evaluation
#               -> model visualizations -> perturbation screen import -> pretraining -> fine-tunes (pretrained and
#               from scratch) -> unseen perturbations predicted and scored with cell-eval -> the transfer table
#   make test   lint, import rules, the docs build and the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= data/demo
STAMP  := $(VENV)/.installed
PRETRAIN_STEPS ?= 600
FINETUNE_STEPS ?= 1500

.PHONY: demo test test-slow lint docs bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,torch]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m scdata demo-bucket $(DEMO)/bucket --experiments 12
	$(BIN)/python -m scdata ingest --source $(DEMO)/bucket/scbasecount/2026-01-12 --store $(DEMO)/store.zarr \
		--cell-count 20000 --batch-size 4 --workers 2
	$(BIN)/python -m scdata info --store $(DEMO)/store.zarr
	$(BIN)/python -m scdata hvg --store $(DEMO)/store.zarr --n-hvgs 2000 --materialize --workers 2
	$(BIN)/python -m scmodel.train --config mini-tiny --store $(DEMO)/store.zarr --out $(DEMO)/run \
		--max-steps 400 --eval-every 200
	$(BIN)/python -m scmodel.viz --config mini-tiny --checkpoint $(DEMO)/run/checkpoint.pt --store $(DEMO)/store.zarr \
		--out $(DEMO)/viz
	$(BIN)/python -m scdata vcc demo $(DEMO)/vcc_data
	$(BIN)/python -m scdata vcc import --input $(DEMO)/vcc_data/adata_Training.h5ad --store $(DEMO)/vcc.zarr \
		--genes-from $(DEMO)/store.zarr --workers 2
	$(BIN)/python -m scmodel.train --config conditional-tiny --set n_hvgs=512 --store $(DEMO)/store.zarr \
		--out $(DEMO)/pretrain --max-steps $(PRETRAIN_STEPS) --eval-every $(PRETRAIN_STEPS)
	$(BIN)/python -m scmodel.train --config finetune-tiny --init-from $(DEMO)/pretrain/checkpoint.pt \
		--store $(DEMO)/vcc.zarr --out $(DEMO)/finetune --max-steps $(FINETUNE_STEPS)
	# held-out cells of the perturbations fine-tuning saw
	$(BIN)/python -m scmodel.predict --checkpoint $(DEMO)/finetune/checkpoint.pt --out $(DEMO)/finetune/prediction
	$(BIN)/python -m scmodel.evaluate --prediction $(DEMO)/finetune/prediction/prediction.h5ad \
		--real $(DEMO)/finetune/prediction/real.h5ad --training $(DEMO)/finetune/prediction/training_sample.h5ad \
		--out $(DEMO)/finetune/cell_eval
	$(BIN)/python -m scmodel.train --config finetune-tiny --store $(DEMO)/vcc.zarr --out $(DEMO)/finetune-scratch \
		--max-steps $(FINETUNE_STEPS)
	# the transfer task: perturbations with no cells in the fine-tuning store, scored against their real cells
	for run in finetune finetune-scratch; do \
		$(BIN)/python -m scmodel.predict --checkpoint $(DEMO)/$$run/checkpoint.pt --out $(DEMO)/$$run/unseen \
			--pert-counts $(DEMO)/vcc_data/pert_counts_Validation.csv --genes $(DEMO)/vcc_data/gene_names.csv && \
		$(BIN)/python -m scmodel.evaluate --prediction $(DEMO)/$$run/unseen/prediction.h5ad \
			--real $(DEMO)/vcc_data/adata_Validation_truth.h5ad --training $(DEMO)/$$run/unseen/training_sample.h5ad \
			--out $(DEMO)/$$run/unseen/cell_eval || exit 1; \
	done
	$(BIN)/python -m scmodel.predict --checkpoint $(DEMO)/finetune/checkpoint.pt --out $(DEMO)/mean-of-seen \
		--pert-counts $(DEMO)/vcc_data/pert_counts_Validation.csv --genes $(DEMO)/vcc_data/gene_names.csv --unseen mean-of-seen
	$(BIN)/python -m scmodel.evaluate --prediction $(DEMO)/mean-of-seen/prediction.h5ad \
		--real $(DEMO)/vcc_data/adata_Validation_truth.h5ad --training $(DEMO)/mean-of-seen/training_sample.h5ad \
		--out $(DEMO)/mean-of-seen/cell_eval
	@echo "Unseen perturbations (the transfer task): pretrained vs from scratch vs the mean of the seen perturbations"
	@$(BIN)/python -m scmodel.evaluate --compare "pretrained + fine-tuned=$(DEMO)/finetune/unseen/cell_eval" \
		"fine-tuned from scratch=$(DEMO)/finetune-scratch/unseen/cell_eval" \
		"mean of seen perturbations=$(DEMO)/mean-of-seen/cell_eval"

test: lint docs
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# the first Python 3.12 that actually runs (a pyenv shim may exist without a 3.12 selected)
PY312 ?= $(shell for p in $$(command -v python3.12) $(HOME)/.pyenv/versions/3.12*/bin/python; do "$$p" -c '' 2>/dev/null && echo "$$p" && break; done)
PEERS := benchmarks/.work/venv312

$(PEERS)/bin/python:
	$(PY312) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet "annbatch[zarrs]" psutil

bench: $(STAMP) $(PEERS)/bin/python
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_hvg.py
	$(BIN)/python benchmarks/bench_loader.py
	$(BIN)/python benchmarks/bench_train.py
	test -d $(DEMO)/store.zarr || $(MAKE) demo
	$(BIN)/python benchmarks/bench_samples.py --store $(DEMO)/store.zarr
	$(BIN)/python benchmarks/bench_query.py
	$(BIN)/python benchmarks/bench_query.py --cells 1000000
	$(BIN)/python benchmarks/bench_vcc.py
	$(BIN)/python benchmarks/bench_perturbation.py --store $(DEMO)/store.zarr
	bash benchmarks/baselines/setup_state.sh
	$(BIN)/python benchmarks/bench_transfer.py

clean-demo:
	rm -rf $(DEMO)
