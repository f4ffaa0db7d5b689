"""The sweep configuration's schema: one pydantic model per section, with types, ranges and choices.

Each method declares its own options the same way, next to its code (``Method.Options`` in
``raybench/methods``). ``raybench.config`` validates a sweep against these models before Ray starts
and turns pydantic's errors into raybench's one-line problems (file and key, did-you-mean).

Models are strict (no str -> int coercion, no bool for int; an int is accepted for a float) and
forbid unknown keys. Only pydantic and the standard library are imported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, model_validator

from raybench.registry import did_you_mean


class Section(BaseModel):
    """A config section: strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


def _layer(v: int | str) -> int | str:
    if v != "all" and not (isinstance(v, int) and v >= 0):
        raise ValueError("must be 'all' or a layer index >= 0 (0: the input of the first transformer layer)")
    return v


class AudioEncoderConfig(Section):
    """A pretrained speech encoder run once over every clip (the embedding stage, raybench/data/embed.py):
    its embeddings replace the audio features in training. Never downloaded: ``path`` is a local
    Hugging Face model folder (config.json, the weights, preprocessor_config.json) of wav2vec 2.0,
    HuBERT, WavLM or Whisper (its encoder)."""

    path: str | None = None  # None: no encoder (training reads the features above)
    # the hidden state kept: an index (0: the input of the transformer layers, n: the output of layer n)
    # or all of them, for a learned weighted sum of the layers (SUPERB, EmoBox); "all" stores every layer
    layer: Annotated[int | str, AfterValidator(_layer)] = "all"
    steps_per_frame: int = Field(1, ge=1)  # embedding steps per video frame: each the mean of the encoder's frames in it
    # audio longer than this is encoded in pieces of this length, each alone (self-attention's memory is
    # quadratic in length); Whisper's encoder takes at most 30 s
    chunk_s: float = Field(30.0, gt=0)
    batch_size: int = Field(4, ge=1)  # clips per task of the embedding stage


class VideoEncoderConfig(Section):
    """A pretrained image encoder run once over every frame of the clip store (the embedding stage,
    raybench/data/embed.py): one embedding per frame, read by the methods that take face embeddings
    (``video_embedding``, ``frozen_fusion``). Never downloaded: ``path`` is a local Hugging Face model
    folder (config.json, the weights, preprocessor_config.json) of CLIP (its projected image
    embedding), ViT or DINOv2 (their pooled output), or an IR-50 face backbone's state dict file
    (.pth/.pt: face.evoLVe's layout, or zhang2021's authors' ``backbone.*`` layout; its 512-d output).
    A VideoMAE folder encodes windows of its ``num_frames`` frames: every frame takes the embedding of
    the window whose centre is nearest."""

    path: str | None = None  # None: no image encoder
    batch_size: int = Field(4, ge=1)  # clips per task of the embedding stage
    frame_batch: int = Field(64, ge=1)  # frames per forward pass
    window_hop: int | None = Field(None, ge=1)  # VideoMAE: frames between windows; None: its num_frames (tiled)


class VideoConfig(Section):
    encoder: VideoEncoderConfig = VideoEncoderConfig()


class AudioConfig(Section):
    # logmel, spectrogram (torchaudio); egemaps, compare: openSMILE's eGeMAPS v02 / ComParE 2016 low-level
    # descriptors (25 / 65 features; n_mels, n_fft, win_ms and hop_ms do not apply to them);
    # egemaps_functionals, compare_functionals: their functionals (88 / 6373 features) over windows of
    # functionals_s seconds every functionals_hop_s seconds
    features: Literal["logmel", "spectrogram", "egemaps", "compare", "egemaps_functionals",
                      "compare_functionals"] = "logmel"
    # the functionals' window (openSMILE's frameSize; at least 0.1 s: its descriptors' frames are 20-60 ms)
    functionals_s: float = Field(1.0, ge=0.1)
    functionals_hop_s: float = Field(0.1, ge=0.01)  # their hop (frameStep; openSMILE rounds it to its 10 ms steps)
    n_mels: int = Field(40, ge=1)
    n_fft: int = Field(400, ge=2)  # 25 ms at 16 kHz
    # analysis window; null: the feature's own, 25 ms for logmel, 40 ms for spectrogram (Zhou et al.
    # 2019's speech spectrogram: Hamming window of 40 ms, hop 10 ms)
    win_ms: float | None = Field(None, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    frames_per_video_frame: int = Field(4, ge=1)  # audio feature steps per video frame in the store
    # how a clip's audio meets its frames (features.frames_audio): time: frame t at data.fps gets the audio
    # of [t / fps, (t + 1) / fps) from the track's start (cut after the last frame, silence where the
    # track ends first), as the authors' time-indexed features; stretch: the whole track spread over the
    # frames (raybench before 2026-12-04; an MP4's AAC padding then drew the audio ~2% early by a clip's end)
    align: Literal["time", "stretch"] = "time"
    encoder: AudioEncoderConfig = AudioEncoderConfig()

    @model_validator(mode="after")
    def _functionals_windows_overlap_or_touch(self):
        if self.functionals_hop_s > self.functionals_s:
            raise ValueError(f"functionals_hop_s ({self.functionals_hop_s:g}) must be <= functionals_s "
                             f"({self.functionals_s:g}): the audio between windows would be left out")
        return self


class SplitConfig(Section):
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    folds: int | None = Field(None, ge=2)
    # with folds: "subjects" (k-fold by subject, fold f tests) or "chunks" (Zhang et al. 2021: the training
    # part in k-1 chunks + the official validation set, rotated; fold f validates on one part, the
    # test split is the same in every fold)
    protocol: Literal["subjects", "chunks"] = "subjects"
    # protocol chunks: how the training part is cut. authors: Zhang et al.'s code (sucv/ABAW2
    # base/dataset.py): the training clips (annotation files) in name order, contiguous chunks; subjects:
    # the training subjects shuffled with the seed, so a subject (a video's _left and _right) is never
    # in two chunks
    chunks: Literal["authors", "subjects"] = "authors"


class CsvConfig(Section):
    manifest: str = "manifest.csv"
    task: Literal["categorical", "continuous"] = "categorical"
    classes: list[str] | None = None


class CremaDConfig(Section):
    audio: Literal["video", "wav"] = "video"  # video: the .flv's own track; wav: AudioWAV/<clip>.wav
    # the four clips the owners' README says do not show what their names say (crema_d.FLAGGED): left out
    # (and said) unless true
    keep_flagged: bool = False


class MspImprovConfig(Section):
    task: Literal["categorical", "continuous"] = "categorical"  # continuous: clip-level valence/arousal


class RavdessConfig(Section):
    channels: list[Literal["speech", "song"]] = ["speech"]
    video: Literal["av", "video_only"] = "av"
    audio: Literal["video", "wav"] = "video"


class SynthConfig(Section):
    actors: int = Field(10, ge=1)
    statements: int = Field(2, ge=1)
    repetitions: int = Field(2, ge=1)
    seconds: float = Field(2.0, gt=0)
    fps: int = Field(15, ge=1)
    size: int = Field(64, ge=16)
    videos: int = Field(12, ge=1)
    video_seconds: float = Field(20.0, gt=0)
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed


class DataConfig(Section):
    dataset: str = "synthetic_ravdess"
    root: str | None = None  # None: ~/.cache/raybench/data/<dataset> (generated if synthetic)
    store_dir: str | None = None  # None: ~/.cache/raybench/stores
    fps: float = Field(10.0, gt=0)
    image_size: int = Field(48, ge=8)
    sample_rate: int = Field(16000, ge=1000)
    audio: AudioConfig = AudioConfig()
    video: VideoConfig = VideoConfig()  # not in the clip store's fingerprint: its encoder's embeddings are a store of their own
    flow: bool = False  # optical flow in the store (set automatically when a swept method needs it)
    flow_algorithm: Literal["farneback", "dis"] = "farneback"  # OpenCV
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    max_clips: int | None = Field(None, ge=1)  # use only the first N clips of the manifest (quick runs)
    split: SplitConfig = SplitConfig()
    # an annotation whose length does not match its video: "truncate" (keep the frames both cover,
    # unannotated frames masked; a warning names the file and both lengths) or "skip" (the clip is
    # skipped and listed with that reason)
    annotation_mismatch: Literal["truncate", "skip"] = "truncate"
    face: Literal["none", "center", "detect", "dataset"] = "none"  # detect: a face detector; dataset: crops
    # data.face detect (and dataset without crops): "haar", OpenCV's frontal-face cascade, or "hog", dlib's
    # HOG detector (its model is inside the dlib-bin wheel); the real-dataset sweeps use hog
    face_detector: Literal["haar", "hog"] = "haar"
    csv: CsvConfig = CsvConfig()
    crema_d: CremaDConfig = CremaDConfig()
    msp_improv: MspImprovConfig = MspImprovConfig()
    fold: int | None = Field(None, ge=0)  # with data.split.folds = k: the fold held out (0..k-1)
    ravdess: RavdessConfig = RavdessConfig()
    synth: SynthConfig = SynthConfig()


def data_config(value: DataConfig | dict[str, Any]) -> DataConfig:
    """``data`` settings as a :class:`DataConfig` (a mapping is validated; its missing keys take the
    defaults). The data layer's entry points (``plan``, ``prepare``) accept either."""
    return value if isinstance(value, DataConfig) else DataConfig.model_validate(value)


class WindowConfig(Section):
    length: int = Field(16, ge=1)
    hop: int = Field(8, ge=1)
    # continuous training windows (raybench.train.feed.clip_windows): fixed: the sliding grid from frame 0
    # each epoch (zhang2021's authors' code); random: from a random phase each epoch, plus one window at the
    # clip's start (as the last window ends at its end); auto: fixed for zhang2021, random for the others
    phase: Literal["auto", "fixed", "random"] = "auto"

    def phase_for(self, method: str) -> str:
        return ("fixed" if method == "zhang2021" else "random") if self.phase == "auto" else self.phase


class TrainConfig(Section):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1.0e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # adam (weight decay as an L2 term in the gradient) or adamw (decoupled); null: the method's own
    # (zhang2021: adam, as its authors' code; the others: adamw)
    optimizer: Literal["adam", "adamw"] | None = None
    num_workers: int = Field(2, ge=1)
    # auto: a one-worker trial trains in its Tune trial's own process (no Ray Train worker group: no
    # worker start-up per trial; Tune reuses the process, imports done, for the next trial) and a
    # trial of several workers in a Ray Train TorchTrainer (DDP); always: every trial a TorchTrainer
    worker_group: Literal["auto", "always"] = "auto"
    use_gpu: bool = False
    # while the cluster's autoscaler is starting nodes (a cluster just launched with `ray up`: its worker
    # nodes still booting), the sweep waits up to this many seconds for them before it sizes its trials
    # on the nodes present; 0: no wait (raybench.trials.wait_for_nodes)
    node_wait_s: float = Field(900.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0)  # with use_gpu: < 1 packs several single-worker trials on one GPU
    # the memory each worker reserves with Ray (GiB), so that Ray packs trials by memory as well as by
    # CPUs and GPUs: null: the training clips the worker holds in memory (their size when they fit
    # train.cache_gib, else nothing); 0: none
    memory_gib_per_worker: float | None = Field(None, ge=0)
    amp: bool = True  # mixed precision; only takes effect on GPU
    seed: int = Field(0, ge=0)  # numpy's generators take no negative seed
    lr_schedule: Literal["none", "plateau"] = "none"  # plateau: ReduceLROnPlateau on the validation metric
    plateau_factor: float = Field(0.1, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0)
    early_stop: int | None = Field(None, ge=1)  # stop a trial after this many epochs without a better score
    # the share of training windows that lose one modality (audio or video, equally likely), set to what
    # the robustness track's audio_missing / video_missing feed (zeros after normalisation); only for a
    # method reading both; 0: none, as every published method here trains (raybench.train.perturb)
    modality_dropout: float = Field(0.0, ge=0, le=1)
    # the input pipeline (raybench/train/feed.py): each worker streams its clips from the store and draws
    # each batch at random from a pool of windows of at least `shuffle_clips` clips and `shuffle_batches`
    # batches; `prefetch` batches are made ahead in a background thread; evaluation batches windows
    # across clips, `eval_batch_size` at a time (null: train.batch_size); `read_threads` row groups are
    # read at once (null: one per whole CPU the worker holds, at least one), and the same threads collate
    # the batches; `cache_gib`: a worker keeps the clips it read in memory for the next epochs when its
    # training clips' columns (the modalities its method reads) take at most this many GiB (0: stream every
    # epoch from the store)
    shuffle_clips: int = Field(8, ge=1)
    shuffle_batches: int = Field(4, ge=1)
    prefetch: int = Field(2, ge=1)
    read_threads: int | None = Field(None, ge=1)
    cache_gib: float = Field(4.0, ge=0)
    eval_batch_size: int | None = Field(None, ge=1)


class TuneConfig(Section):
    metric: str | None = None  # None: val/uar (categorical) or val/ccc (continuous)
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(2, ge=1)
    num_samples: int = Field(1, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: derived from the cluster's resources
    # a trial that fails (its process or node lost, or any error, a deterministic one too) is started again
    # up to this many times over its whole life (a --resume does not reset the count), from its last
    # complete checkpoint, in the same MLflow run (Tune's FailureConfig); 0: it fails, and `--resume`
    # continues it from that checkpoint. A node the cloud preempts (drained by Ray) is not counted: Ray
    # starts such a trial again whatever this says
    max_failures: int = Field(0, ge=0)
    # continuous task, folds sharing one test split (data.split.protocol: chunks): how the best
    # configuration's fold models' test predictions are merged: ccc_centering (Zhang et al. 2021) or mean
    fold_merge: Literal["ccc_centering", "mean"] = "ccc_centering"
    # seeds as repeats: every configuration trains `repeats` times (train.seed, train.seed + 1, ...);
    # selection uses the mean validation score over repeats (and folds); the chosen configuration's
    # test metrics are reported as mean, std and a 95% bootstrap confidence interval
    repeats: int = Field(1, ge=1)
    # bootstrap resamples of the test clips (categorical) or videos (continuous) for that interval; 0: none
    bootstrap: int = Field(1000, ge=0)
    search_space: dict[str, Any] = {}  # checked by raybench.config (keys name settings of these models)


class CrossCorpusConfig(Section):
    """One target corpus of the cross-corpus track: models trained on the sweep's dataset are tested on
    it (prepared with the sweep's own data settings, its own root)."""

    dataset: str  # a categorical dataset's registry name
    root: str | None = None  # None: its default (generated for a synthetic set)
    split: Literal["all", "test"] = "all"  # every clip of the target corpus, or its test split
    labels: dict[str, str] | None = None  # source class -> target class; None: the classes both have, by name


class EvalConfig(Section):
    # continuous metrics over the annotated source frames: one CCC over all frames pooled (Aff-Wild2
    # practice, zhang2021's authors, and the AVEC 2016 baseline's CCC over RECOLA's dev recordings
    # concatenated) or the mean of per-clip CCCs (AVEC 2018's practice)
    ccc_over: Literal["frames", "clips"] = "frames"
    # every trial's best checkpoint evaluated once more on its validation split after the sweep, for
    # its figures (confusion matrix and recall per class, or traces and a scatter) and predictions
    val_plots: bool = True
    # which configurations see the test split: the one best on validation per dataset (best), or also
    # the best of each method on each dataset (each_method: a methods x datasets leaderboard with test
    # numbers in every cell, python -m raybench.report); selection stays on validation either way
    test: Literal["best", "each_method"] = "best"
    # the robustness track: every configuration tested is also tested under these conditions
    # (raybench.train.perturb): audio_missing, video_missing, video_occlusion, video_blur, and white noise
    # on the waveform at 20, 10, 0 dB SNR: audio_snr20, audio_snr10, audio_snr0
    robustness: list[Literal["audio_missing", "video_missing", "video_occlusion", "video_blur", "audio_snr20",
                             "audio_snr10", "audio_snr0"]] = []
    # the cross-corpus track: every configuration tested is also tested on these corpora, over the
    # classes they share with the training corpus (raybench.labels)
    cross_corpus: list[CrossCorpusConfig] = []


class MethodOptions(BaseModel):
    """A method's config keys (``method.*``) with their types, ranges and choices; the field defaults
    are the method's defaults. Each method subclasses it next to its code (``Method.Options``)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, populate_by_name=True)

    name: str = ""  # the method's registered name (``method.name``); not one of its keys


class MlflowConfig(Section):
    tracking_uri: str | None = None
    experiment: str | None = None


class SweepConfig(Section):
    # the sweep id, the MLflow experiment and Tune's folder are made from it: letters, digits, . _ - only
    # (a quote broke MLflow's run search after the prepare stage, before 2026-12-03)
    name: str = Field("sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    data: DataConfig = DataConfig()
    method: dict[str, Any] = {"name": "av_fusion"}  # name + the method's Options (checked per method)
    window: WindowConfig = WindowConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    eval: EvalConfig = EvalConfig()
    mlflow: MlflowConfig = MlflowConfig()
    storage: str | None = None  # None: ~/raybench_results
    # settings for one method's trials only, e.g. {zhang2021: {train: {lr: 3.0e-4}}}: train.*, window.*
    # and method.* keys; a value the search space samples for the same key wins
    per_method: dict[str, Any] = {}


class TrialConfig(SweepConfig):
    """One trial's configuration: the sweep's, with the trial's sampled values and its method's
    ``per_method`` settings applied, and ``method`` its method's typed options (built by
    ``raybench.config.trial_config``)."""

    method: SerializeAsAny[MethodOptions]  # type: ignore[assignment]


_TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "string": "str", "list": "list", "dict": "mapping",
               "model": "mapping", "model_attributes": "mapping"}


def type_name(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "mapping"}.get(
        type(v), type(v).__name__)


def _fields(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model at ``loc`` (for did-you-mean)."""
    for part in loc:
        f = model.model_fields.get(str(part)) if isinstance(part, str) else None
        ann = getattr(f, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return []
    return list(model.model_fields)


def problems_from(e: ValidationError, model: type[BaseModel], prefix: str = "", what: str = "") -> list[str]:
    """pydantic's errors as raybench problems: "'train.lr' must be > 0, got -1"."""
    out = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in ("int", "none"))))
        key = prefix + ".".join(str(p) for p in loc)
        name = f"{key!r}{what}"
        typ, ctx, v = err["type"], err.get("ctx") or {}, err.get("input")
        if typ == "extra_forbidden":
            known = _fields(model, loc[:-1])
            out.append(f"unknown key {key!r}{what}{did_you_mean(str(loc[-1]), known)}"
                       + (f"; known keys: {', '.join(known)}" if what else ""))
        elif typ == "literal_error":
            choices = [c.strip().strip("'") for c in ctx.get("expected", "").replace(" or ", ", ").split(",")]
            out.append(f"{name} must be one of {', '.join(choices)}, got {v!r}{did_you_mean(str(v), choices)}")
        elif typ.endswith("_type") or typ.endswith("_parsing"):
            want = _TYPE_NAMES.get(typ.rsplit("_", 1)[0], typ.rsplit("_", 1)[0])
            out.append(f"{name} must be {want}, got {type_name(v)} {v!r}")
        elif typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            op, bound = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
                         "less_than_equal": ("<=", "le")}[typ]
            out.append(f"{name} must be {op} {ctx[bound]}, got {v!r}")
        elif typ == "too_short":
            out.append(f"{name} must have at least {ctx.get('min_length')} item(s), got {v!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{name}: {msg}, got {v!r}")
    return out


def check(model: type[BaseModel], value: Any, prefix: str = "", what: str = "") -> tuple[BaseModel | None, list[str]]:
    """Validate ``value`` against ``model``: (the model instance, []) or (None, problems)."""
    try:
        return model.model_validate(value), []
    except ValidationError as e:
        return None, problems_from(e, model, prefix, what)
