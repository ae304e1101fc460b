#!/usr/bin/env bash
# The GPU measurements of issues 4, 5, 7 and 8 in one lease of one H100/H200, as back-to-back calls (plans below).
#
# A call may carry at most 64 MiB of the working tree, so Imagenette (166 MiB) travels in three git-ignored parts
# made here beforehand (.xfer/p1 = val + train class 9, p2 = train classes 0-3 and 8, p3 = train classes 4-7);
# each call copies its part to /tmp/data on the GPU machine, where it stays while the machine is held.
#
#   bash benchmarks/gpu_session.sh 1           # GPU smoke of parallel reproduce runs, gpu_startup.py, gpu_vs_timm.py
#   bash benchmarks/gpu_session.sh 2           # mobilenets bench --runtimes cuda,cuda-bf16 (16-model grid)
#   TRAIN_EPOCHS=80 bash benchmarks/gpu_session.sh 3 EPOCHS   # train_gpu.py, then mobilenets reproduce --budget full
#
# COPY_ONLY=1 makes a stage copy its part and stop. Stage 3 checks that all of Imagenette is in /tmp/data and stops
# otherwise (the machine went back between calls: start again from stage 1). It runs reproduce with --jobs 4
# (REPRODUCE_JOBS): runs of one resolution share a process and its decoded splits, split up so that the processes'
# estimated seconds balance (reproduce.run_cost); REPRODUCE_ARGS adds any other option.
#
# Stage 1 also runs benchmarks/gpu_startup.py (SKIP_STARTUP=1 skips it): cold training runs with cuDNN autotuning
# on/off (and the Triton depthwise layers, STARTUP_VARIANTS; STARTUP_ARGS adds options). RECIPE_EXTRA=auto in stage 3 applies what it
# recommended (the default unless autotuning off is clearly faster), read from /tmp/startup-recipe.txt, as there is no
# time to read results between calls: the lines go after configs/modern.yaml for reproduce, and as flags to
# train_gpu.py. RECIPE_EXTRA=$'cudnn_benchmark: false' (or depthwise: triton) sets them by hand.
# DECODE_BENCH=1 runs benchmarks/decode.py after a stage's copy (on 3000 val images, part 1; COPY_ONLY or not).
# GPU_TESTS=1 runs the test suite's CUDA tests (pytest -m gpu) in stage 1 first: the Triton and nvjpeg paths' numerics
# and the training step's freedom from host syncs (GPU_TESTS_K="expr" passes -k expr: a subset). DW_DGRAD=1 then runs
# benchmarks/dw_dgrad.py (the stride-2 depthwise input gradient: cuDNN's against the Triton kernels). SKIP_SMOKE=1 / SKIP_STARTUP=1 / SKIP_GPU_VS_TIMM=1 drop parts of
# stage 1; SKIP_TRAIN_GPU=1 / SKIP_REPRODUCE=1 parts of stage 3. gpu_vs_timm.py first runs the Triton paths in a child process (a kernel fault there cannot poison the run).
#
# Budget: 15 device-minutes per lease, machine start-up (1-3 min), transfers and idle included; one call is cut at
# 600 s. Each plan's timeouts add up to about 11-12 minutes; call them back to back (the machine goes after 30 s idle):
#   #8 alone (reproduce, at most 10 minutes on the GPU; the first two calls only copy, leaving the most for it):
#     COPY_ONLY=1 ... 1
#     COPY_ONLY=1 ... 2
#     SKIP_TRAIN_GPU=1 REPRODUCE_TIMEOUT=520 REPRODUCE_ARGS="--time-budget 480" ... 3 30             # <= 585 s
#   (reproduce --time-budget times a training step here, scales its cost model, fitted to the H200 lease's runs, by
#   it, and gives every run the most epochs, at most 30, estimated to fit: about 23 on that H200, 14 on a GPU 1.4x
#   slower. The report-only fallback after a timeout keeps the epochs of the runs started. Start-up (1-3 min) +
#   two copies + 585 s leaves about a minute of the 15.)
#   #4 and #7: the #4 run first, as it can settle its issue with one run, then gpu_vs_timm.py on what is left
#   (its sections are ordered by value and each is skipped when its estimate no longer fits). train_gpu.py trains
#   as many epochs as fit in 275 s with its set-up, with the MixUp/CutMix that benchmarks/recipe_proxy.py favoured:
#   +4.2 points (2 seeds each) in its CPU proxy, +2.5 at twice the epochs, which helped both; weight decay 5e-4
#   added nothing to it, and alone lost 1.6 (1 seed). gpu_vs_timm.py leaves out the batch-1 section here:
#     COPY_ONLY=1 ... 1
#     COPY_ONLY=1 DECODE_BENCH=1 ... 2                                                               # <= 45 s
#     SKIP_REPRODUCE=1 TRAIN_EPOCHS=500 TRAIN_TIMEOUT=320 TRAIN_ARGS="--time-budget 275 --mixup-alpha 0.2
#       --cutmix-alpha 1.0 --eval-every 10" ... 3                                                    # <= 335 s
#     SKIP_SMOKE=1 SKIP_STARTUP=1 GPU_VS_TIMM_BUDGET=B GPU_VS_TIMM_TIMEOUT=B+40 GPU_VS_TIMM_ARGS="--sections
#       hbm_bound,inference_eager,numerics,train_eager,inference_compiled,train_compiled,profile,numerics_trained" ... 1
#   with B = the lease's budget_left_s after call 3, less 90 s; call 4 carries .xfer/weights-075-192 (TF's
#   0.75 MobileNet-192, made here by `mobilenets convert .../mobilenet_v1_0.75_192_quant.tflite --out
#   .xfer/weights-075-192`): gpu_vs_timm checks the fast paths' numerics on those trained weights too
#   (NUMERICS_WEIGHTS names another folder).
#
#   #7 alone (what the fourth 2026-11-27 lease left, results/logs-h200-2026-11-27-lease4/README.md: the training
#   step at 1.32x timm compiled in one alternation, ours with the fast layers, tuned and replayed as one CUDA graph,
#   which `mobilenets train --step-graph` now runs, never yet on a GPU; timm tuned untimed; two GPU tests fixed after
#   it, not rerun; the batch-256 inference graphs untimed since the CudaGraphRunner fix):
#     GPU_TESTS=1 GPU_TESTS_TIMEOUT=150 SKIP_SMOKE=1 SKIP_STARTUP=1 SKIP_GPU_VS_TIMM=1 ... 1          # <= 165 s
#     (first, on a fresh lease, carrying .xfer/p1: every GPU test, the step graph's three (tests/test_step_graph.py:
#     the trainer's graph against its eager step, and a graphed run stopped and resumed) and the two fixed after the
#     fourth lease among them.)
#     SKIP_SMOKE=1 SKIP_STARTUP=1 GPU_VS_TIMM_BUDGET=430 GPU_VS_TIMM_TIMEOUT=470 GPU_VS_TIMM_ARGS="--sections
#       hbm_bound,train_tuned" ... 1                                                                   # <= 485 s
#     (back to back: train_tuned compiles its own twins without train_compiled (timm's first compiled step took
#     44-61 s, ours' 19-23, ours fast 20-30), then ours with coordinate-descent tuning (164-192 s), direct, as
#     gpu_vs_timm's whole-step CUDA graph, as the trainer's (ours_compiled_fast_tuned_stepgraph: `mobilenets train
#     --step-graph`'s own StepGraph and train_step), and with Inductor's CUDA graphs (`--compile-cudagraphs`).
#     Estimate 390 s, after the script's start and 7-11 s of HBM probe (the budget leaves about 20 s for both: a
#     section whose estimate exceeds the time left is skipped); no Triton preflight: no section here runs our
#     Triton kernels. With a start of about 35 s the two calls take about 690 s of the lease's 900.)
#     Timm tuned (--tune-timm, 200 s more, untimed) waits for another lease: the section with it needs a call of
#     its own near the 600 s limit.
#     The batch-256 inference graphs, untimed since the CudaGraphRunner fix, come third, back to back, only with
#     170 s of the lease left (about 100 s with a cold Triton preflight of 34 s; a section skipped for the budget
#     is recorded as such):
#     SKIP_SMOKE=1 SKIP_STARTUP=1 GPU_VS_TIMM_BUDGET=120 GPU_VS_TIMM_TIMEOUT=140 GPU_VS_TIMM_ARGS="--sections
#       hbm_bound,inference_compiled" ... 1                                                            # <= 155 s
#   #7, the stride-2 input-gradient kernel (`--depthwise hybrid`, written 2026-11-28 without a GPU; the training step
#   was 1.29x timm compiled on both leases of that day, 0.1 ms short of 1.3x, and cuDNN's stride-2 input gradient
#   took 1.21 ms of it):
#     GPU_TESTS=1 GPU_TESTS_K="hybrid" GPU_TESTS_TIMEOUT=60 DW_DGRAD=1 SKIP_SMOKE=1 SKIP_STARTUP=1
#       SKIP_GPU_VS_TIMM=1 ... 1                                                                       # <= 165 s
#     (nothing carried: the hybrid layer's GPU test against fp32, then benchmarks/dw_dgrad.py: its kernel's tuning
#     and median ms per stride-2 layer against cuDNN's, eager and replayed, results/dw-dgrad-<gpu>.json. The other
#     GPU tests passed on the second lease of 2026-11-28; 165 + 535 s leaves the machine's start 200 s of the 900.)
#     SKIP_SMOKE=1 SKIP_STARTUP=1 GPU_VS_TIMM_BUDGET=500 GPU_VS_TIMM_TIMEOUT=520 GPU_VS_TIMM_ARGS="--sections
#       hbm_bound,train_tuned --hybrid" ... 1                                                         # <= 535 s
#     (back to back: train_tuned as above plus ours_compiled_hybrid_tuned_graph, checked against the flipped
#     graph's losses; the Triton preflight runs first, 10-34 s, 34 cold, and train_tuned starts only with its 450 s
#     estimate left: 500 leaves 50 s for the start, the preflight and hbm_bound, where 480 skipped it whenever they
#     took over 30 s; tests/test_gpu_session.py checks each plan's budget.)
#   #4's run is `python benchmarks/train_gpu.py` with its defaults now (they were the TRAIN_ARGS above).
#
# Everything small that a stage writes (results/, logs, train_gpu.py's metrics) comes back as $OUT/stage<N>.tar.gz,
# replaced every 30 s, so a call cut short still returns what it had. It holds the whole results/ folder: remove the
# local results/reproduce-imagenette-<gpu>/ before unpacking a stage 3 tarball over a checkout (runs of two leases
# must not mix; the old ones stay in git).
set -u
cd "$(dirname "$0")/.." || exit 1  # the repository root
stage=${1:-}
case $stage in  # before anything is copied or bundled: a wrong stage ran nothing and said "done", exit 0
1 | 2 | 3) ;;
*) echo "gpu_session.sh: stage='$stage' is not allowed: give 1, 2 or 3 (the plans are in this script's header)" >&2
   exit 2 ;;
esac
if [ -z "${COPY_ONLY:-}" ] && ! python3 -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null
then  # every stage measures on the GPU: on a machine without one each of its steps failed in turn
    echo "gpu_session.sh: stage $stage needs a CUDA device, and python3 here has no torch that sees one" >&2
    exit 1
fi
epochs=${2:-30}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/data
log() { echo "[$(date +%T)] $*"; }
# What comes back: results/, the logs and train_gpu's run records, as one tarball in $OUT, replaced atomically every
# 30 s and at exit. A call cut by its time limit is killed without running the EXIT trap, but $OUT still comes back.
bundle() {
    local tmp="$OUT/.stage$stage.$BASHPID.tmp"  # one per process: the 30 s loop's and the exit's never collide
    local runs=()  # reproduce's run records too: a call cut by the lease keeps what its runs measured
    [ -d /tmp/reproduce/runs ] && runs=(/tmp/reproduce/runs/*/summary.json /tmp/reproduce/runs/*/metrics.jsonl
        /tmp/reproduce/runs/*/config.yaml /tmp/reproduce/runs/*/env.json)
    tar czf "$tmp" results /tmp/logs /tmp/train-gpu/metrics.jsonl /tmp/train-gpu/summary.json ${runs[@]+"${runs[@]}"} \
        2>/dev/null
    mv -f "$tmp" "$OUT/stage$stage.tar.gz"
}
finish() {  # stop the snapshot loop and a tar it may have running, then the last bundle; no partial file left
    pkill -P "$snapshots" 2>/dev/null; kill "$snapshots" 2>/dev/null
    bundle
    rm -f "$OUT"/.stage"$stage".*.tmp
    ls -la "$OUT"
}
mkdir -p /tmp/logs
T="timeout -k 15"  # TERM at the limit, KILL 15 s later if a process ignores it

part=.xfer/p$stage
if [ -d "$part" ]; then
    cp -r "$part/." /tmp/data/ && log "copied $part: $(find /tmp/data -type f | wc -l) files in /tmp/data"
else
    log "WARNING: $part is not here (not carried?): /tmp/data has $(find /tmp/data -type f | wc -l) files"
fi
if [ -n "${DECODE_BENCH:-}" ]; then  # its JSON comes back in this call's bundle, or with COPY_ONLY a later call's
    log "decode benchmark (library vs plain thread pool; with CUDA, the copy to the GPU vs nvjpeg; 3000 val images)"
    $T 40 python3 benchmarks/decode.py --data /tmp/data --split val --images 3000 --threads 16 --rounds 2 2>&1 \
        | tee /tmp/logs/decode.log
fi
if [ -n "${COPY_ONLY:-}" ]; then log "stage $stage: copied only"; exit 0; fi
# stops with the script, even a killed one; its output detached, so nothing waits on it for the pipe to close
(while sleep 30 && kill -0 $$ 2>/dev/null; do bundle; done) >/dev/null 2>&1 </dev/null &
snapshots=$!
trap finish EXIT

case $stage in
1)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, torchvision, timm, triton; print(torch.__version__, torchvision.__version__, timm.__version__, triton.__version__, torch.cuda.get_device_name())"
    # smoke: the device-resident training path in spawned parallel runs on the GPU, on val used as train
    mkdir -p /tmp/smoke && ln -sfn /tmp/data/val /tmp/smoke/train && ln -sfn /tmp/data/val /tmp/smoke/val
    if [ -z "${SKIP_SMOKE:-}" ]; then
        log "smoke: mobilenets reproduce --budget full --epochs 1 --experiments table5 --jobs 2"
        $T 120 python3 -m mobilenets reproduce --data /tmp/smoke --budget full --epochs 1 --experiments table5 \
            --jobs 2 --out /tmp/rsmoke 2>&1 | tee /tmp/logs/smoke-reproduce.log | grep -v " step "
        grep -h '"train_images_per_s"\|"final_top1"\|"wall_time_s"' /tmp/rsmoke/runs/*/summary.json
    fi
    if [ -n "${GPU_TESTS:-}" ]; then  # the tests that skip without CUDA (pytest -m gpu), where pytest is installed
        if python3 -c "import pytest" 2>/dev/null; then
            # the tests read real images from $MOBILENETS_DATA/imagenette (../shared does not travel): the carried
            # part; nothing else is linked, so the tests needing other shared data skip with their reason
            mkdir -p /tmp/mdata && ln -sfn /tmp/data /tmp/mdata/imagenette
            log "pytest -m gpu (MOBILENETS_DATA=/tmp/mdata: imagenette -> /tmp/data)"
            # -v: each test's outcome as it ends, so a run cut by its timeout still says what passed
            MOBILENETS_DATA=/tmp/mdata $T "${GPU_TESTS_TIMEOUT:-120}" python3 -m pytest -v --tb=short -m gpu \
                -p no:cacheprovider ${GPU_TESTS_K:+-k "$GPU_TESTS_K"} tests 2>&1 | tee /tmp/logs/gpu-tests.log | tail -25
        else
            log "GPU_TESTS: pytest is not installed on this machine; skipped"
        fi
    fi
    if [ -n "${DW_DGRAD:-}" ]; then  # the stride-2 depthwise input gradient: cuDNN's against the Triton kernels
        log "dw_dgrad (batch 256, 1.0-224, bf16)"
        $T "${DW_DGRAD_TIMEOUT:-90}" python3 benchmarks/dw_dgrad.py 2>&1 | tee /tmp/logs/dw-dgrad.log
    fi
    if [ -z "${SKIP_STARTUP:-}" ]; then  # is the 14 s first epoch cuDNN autotuning? cold runs of each variant
        log "gpu_startup (cudnn.benchmark on/off x PyTorch/Triton depthwise, fresh processes)"
        $T "${STARTUP_TIMEOUT:-180}" python3 benchmarks/gpu_startup.py --data /tmp/smoke --rounds "${STARTUP_ROUNDS:-1}" \
            --variants "${STARTUP_VARIANTS:-bench,nobench,triton-dw,triton-dw-nobench}" \
            --recipe-out /tmp/startup-recipe.txt ${STARTUP_ARGS:-} 2>&1 | tee /tmp/logs/gpu-startup.log
    fi
    if [ -z "${SKIP_GPU_VS_TIMM:-}" ]; then
        log "gpu_vs_timm"
        trained=()  # trained weights for the numerics check, when carried (see NUMERICS_WEIGHTS above)
        [ -d "${NUMERICS_WEIGHTS:-.xfer/weights-075-192}" ] && trained=(--numerics-weights "${NUMERICS_WEIGHTS:-.xfer/weights-075-192}")
        $T "${GPU_VS_TIMM_TIMEOUT:-200}" python3 benchmarks/gpu_vs_timm.py --images /tmp/data/val \
            --time-budget "${GPU_VS_TIMM_BUDGET:-120}" --triton-configs 4 ${trained[@]+"${trained[@]}"} ${GPU_VS_TIMM_ARGS:-} 2>&1 \
            | tee /tmp/logs/gpu-vs-timm.log | tail -40
    fi
    ;;
2)
    log "bench cuda, cuda-bf16"
    $T "${BENCH_TIMEOUT:-80}" python3 -m mobilenets bench --runtimes cuda,cuda-bf16 --min-runs 30 --min-time 0.2 \
        --out results/ --plots results/ --no-progress --format md 2>&1 | tee /tmp/logs/bench-cuda.log
    ;;
3)
    n_train=$(find /tmp/data/train -type f 2>/dev/null | wc -l)
    n_val=$(find /tmp/data/val -type f 2>/dev/null | wc -l)
    log "train data: $n_train files, val: $n_val files"
    if [ "$n_train" -lt "${MIN_TRAIN_FILES:-9469}" ] || [ "$n_val" -lt "${MIN_VAL_FILES:-3925}" ]; then
        log "STOP: Imagenette is incomplete in /tmp/data (the machine was given back between calls, or a part was"
        log "not carried): rerun stages 1 and 2 with COPY_ONLY=1 first"
        exit 3
    fi
    if [ "${RECIPE_EXTRA:-}" = auto ]; then  # what stage 1's gpu_startup.py recommended (empty: the defaults)
        if [ -f /tmp/startup-recipe.txt ]; then
            RECIPE_EXTRA=$(cat /tmp/startup-recipe.txt)
            log "RECIPE_EXTRA=auto: '${RECIPE_EXTRA}' from gpu_startup.py"
        else
            RECIPE_EXTRA=""
            log "WARNING: RECIPE_EXTRA=auto but no /tmp/startup-recipe.txt (stage 1 did not run gpu_startup.py here):"
            log "training with the defaults"
        fi
    fi
    train_flags=""  # the same choice for train_gpu.py (YAML booleans in any case: false/no/off, true/yes/on)
    extra=$(echo "${RECIPE_EXTRA:-}" | tr '[:upper:]' '[:lower:]' | tr -d ' ')
    case "$extra" in *cudnn_benchmark:false* | *cudnn_benchmark:no* | *cudnn_benchmark:off*) train_flags+=" --no-cudnn-benchmark" ;; esac
    case "$extra" in *depthwise:triton*) train_flags+=" --depthwise triton" ;; *depthwise:taps*) train_flags+=" --depthwise taps" ;; esac
    if [ -z "${SKIP_TRAIN_GPU:-}" ]; then  # set it when re-running only to resume an interrupted reproduce
        log "train_gpu (1.0-160, full Imagenette)${train_flags}"
        # TRAIN_ARGS adds options, e.g. "--mixup-alpha 0.2 --cutmix-alpha 1.0 --eval-every 10" for a long schedule
        rm -rf /tmp/train-gpu  # this session's scratch run folder: an earlier call's checkpoints there would stop it
        $T "${TRAIN_TIMEOUT:-250}" python3 benchmarks/train_gpu.py --data /tmp/data --out /tmp/train-gpu \
            --epochs "${TRAIN_EPOCHS:-80}" ${train_flags} ${TRAIN_ARGS:-} 2>&1 | tee /tmp/logs/train-gpu.log | grep -v " step "
    fi
    if [ -n "${SKIP_REPRODUCE:-}" ]; then log "stage $stage done (SKIP_REPRODUCE)"; exit 0; fi
    gpu=$(python3 -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-').lower())")
    recipe=()
    if [ -n "${RECIPE_EXTRA:-}" ]; then  # e.g. RECIPE_EXTRA=$'cudnn_benchmark: false\ndepthwise: triton'
        { cat configs/modern.yaml; printf '\n%s\n' "$RECIPE_EXTRA"; } > /tmp/recipe.yaml
        recipe=(--recipe /tmp/recipe.yaml)
        log "recipe: configs/modern.yaml + $(echo "$RECIPE_EXTRA" | tr '\n' ' ')"
    fi
    jobs=${REPRODUCE_JOBS:-4}
    log "reproduce --budget full --epochs $epochs --jobs $jobs"
    $T "${REPRODUCE_TIMEOUT:-300}" python3 -m mobilenets reproduce --data /tmp/data --budget full \
        --epochs "$epochs" --jobs "$jobs" --out /tmp/reproduce ${recipe[@]+"${recipe[@]}"} ${REPRODUCE_ARGS:-} 2>&1 | tee /tmp/logs/reproduce.log | grep -v " step "
    rc=${PIPESTATUS[0]}
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then  # cut by its timeout: the report from the finished runs (incomplete)
        log "reproduce did not finish: writing the report from the finished runs"
        $T 30 python3 -m mobilenets reproduce --data /tmp/data --budget full --epochs "$epochs" --report-only \
            --out /tmp/reproduce ${recipe[@]+"${recipe[@]}"} ${REPRODUCE_ARGS:-} 2>&1 | tee -a /tmp/logs/reproduce.log
    fi
    dest="results/reproduce-imagenette-$gpu"
    rm -rf "$dest"  # an earlier lease's runs (kept in git) must not mix with this one's
    mkdir -p "$dest"
    cp /tmp/reproduce/*.md /tmp/reproduce/*.json /tmp/reproduce/*.png "$dest/" 2>/dev/null
    if [ ${#recipe[@]} -gt 0 ]; then cp /tmp/recipe.yaml "$dest/recipe.yaml"; fi  # the report names /tmp/recipe.yaml
    shopt -s nullglob
    for run in /tmp/reproduce/runs/*/; do  # each run's record, not its checkpoints or weights
        mkdir -p "$dest/runs/$(basename "$run")"
        cp "$run"/summary.json "$run"/metrics.jsonl "$run"/config.yaml "$run"/env.json "$dest/runs/$(basename "$run")/" 2>/dev/null
    done
    ;;
esac
log "stage $stage done"
