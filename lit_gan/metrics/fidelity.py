"""FID, KID, Inception Score and precision/recall, computed by torch-fidelity.

Nothing here re-implements a metric: generated images are gathered (across
DDP ranks, as a torchmetrics ``cat`` state) and handed with the real dataset
to ``torch_fidelity.calculate_metrics`` (on rank 0, which sends the scores to
the other ranks), whose Inception port and resizing
(no antialiasing) match the TensorFlow numbers papers quote. torch-fidelity
caches the real set's features on disk under a name that encodes dataset,
split, resolution, extractor and weights, so they are computed once.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Literal, Optional

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lit_gan.errors import require
from lit_gan.metrics.digits import cache_directory

EXTRACTOR = "inception-v3-compat"
ISC_SPLITS = 10  # torch-fidelity's (and Salimans et al.'s) number of Inception Score splits
PRC_NEIGHBOURS = 3  # k of the k-NN radii of precision/recall (Kynkäänniemi et al. 2019)


# The switches of torch-fidelity's scores (data.scores) and the keys each logs under eval/.
SCORE_KEYS = {"fid": ("fid",), "kid": ("kid",), "isc": ("inception_score",), "prc": ("precision", "recall")}
Score = Literal["fid", "kid", "isc", "prc"]
SCORES = tuple(SCORE_KEYS)  # all of them, the default


def score_switches(scores) -> dict[str, bool]:
    """``data.scores`` (e.g. ``[fid, kid]``) as FidelityMetrics' switches, refused when empty or unknown."""
    scores = list(scores) if isinstance(scores, (list, tuple)) else scores
    require(isinstance(scores, list) and len(scores) > 0 and set(scores) <= set(SCORE_KEYS)
            and len(set(scores)) == len(scores), "data.scores", scores,
            f"a non-empty list of {', '.join(SCORE_KEYS)} (FID, KID, Inception Score, precision/recall), each once")
    return {name: name in scores for name in SCORE_KEYS}


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Images in [-1, 1] (1 or 3 channels) -> uint8 RGB, as torch-fidelity expects."""
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class UInt8Images(Dataset):
    """A dataset of [-1, 1] image tensors (or a stacked tensor of them) seen as uint8 RGB."""

    def __init__(self, images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        image = self.images[i]
        return image if image.dtype == torch.uint8 else to_uint8_rgb(image.unsqueeze(0))[0]


def weights_tag(weights_path: Optional[str]) -> str:
    """``standard`` for torch-fidelity's own download, else a hash of the local weights file."""
    if weights_path is None:
        return "standard"
    path = Path(weights_path)
    require(path.is_file(), "data.inception_weights", weights_path,
            "a local file of Inception weights (weights-inception-2015-12-05-6726825d.pth)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class FidelityMetrics(Metric):
    """FID (Heusel et al. 2017), KID (Bińkowski et al. 2018), IS (Salimans et al. 2016) and
    precision/recall (Kynkäänniemi et al. 2019) of the generated images against ``real``.

    All on torch-fidelity's Inception features: precision/recall too, where the paper (and torch-fidelity's
    default) uses VGG-16, so that one offline weights file and one cached real feature set serve every score.

    ``weights_path`` points at a local copy of torch-fidelity's Inception
    weights for machines without internet; ``None`` lets torch-fidelity fetch them.
    """

    full_state_update = False
    higher_is_better = None
    goals = {"fid": "minimize", "kid": "minimize", "inception_score": "maximize", "precision": "maximize",
             "recall": "maximize"}  # keys of compute(), with every switch on

    @classmethod
    def goals_of(cls, switches: dict[str, bool]) -> dict[str, str]:
        """The keys of compute() with these switches on, with their goals."""
        return {key: cls.goals[key] for name, on in switches.items() if on for key in SCORE_KEYS[name]}

    def __init__(self, real: Dataset, cache_name: str, weights_path: Optional[str] = None, fid: bool = True,
                 kid: bool = True, isc: bool = True, prc: bool = True, batch_size: int = 64,
                 feature_layer: str = "2048", **kwargs):
        super().__init__(**kwargs)
        self.real = real
        self.weights_path = weights_path
        # "ieee": features made in IEEE float32 (lit_gan.metrics.float32), not a GPU's TF32 ones of earlier versions
        self.cache_name = f"{cache_name}-{weights_tag(weights_path)}-ieee"
        self.switches = {"fid": fid, "kid": kid, "isc": isc, "prc": prc}
        self.batch_size = batch_size
        self.feature_layer = feature_layer  # "2048" is the standard; "64" gives well-conditioned small tests
        self.add_state("samples", [], dist_reduce_fx="cat")

    def update(self, images: Tensor) -> None:
        self.samples.append(to_uint8_rgb(images))

    def check_sample_count(self, num_samples: int) -> None:
        """Refuse too few samples (or real images) for a switched-on score: torch-fidelity would crash or give NaN."""
        require(not self.switches["isc"] or num_samples >= ISC_SPLITS, "evaluation.num_samples", num_samples,
                f"at least {ISC_SPLITS} samples for isc (one per Inception Score split), or isc left out of data.scores")
        for metric, minimum in (("fid", 2), ("kid", 2), ("prc", PRC_NEIGHBOURS + 1)):  # fid: a covariance needs 2
            require(not self.switches[metric] or min(num_samples, len(self.real)) >= minimum, "evaluation.num_samples",
                    num_samples, f"at least {minimum} samples for {metric}, and as many real images (there are "
                    f"{len(self.real)}), or {metric} left out of data.scores")

    def fetch_weights(self) -> None:
        """With ``weights_path`` unset, download torch-fidelity's Inception weights now (once, into torch hub's
        cache), so a machine without internet learns it before training, in one line, not from urllib's
        traceback at the first evaluation."""
        if self.weights_path is not None:
            return
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        try:
            torch.hub.load_state_dict_from_url(URL_INCEPTION_V3, map_location="cpu", progress=False)
        except Exception as error:  # urllib's URLError, a proxy's refusal, a full disk ...
            require(False, "data.inception_weights", None,
                    f"a local copy of torch-fidelity's Inception weights ({URL_INCEPTION_V3}) on a machine that cannot "
                    f"download them ({type(error).__name__}: {error})")

    def compute(self) -> dict[str, Tensor]:
        """The scores of the gathered samples. Under DDP rank 0 alone runs torch-fidelity (every rank holds all
        samples, so each would repeat the whole computation and its memory) and broadcasts the scores, or its
        error, so that no rank waits for an answer that never comes."""
        if not (self.sync_on_compute and torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_world_size() > 1):
            return self._scores()
        outcome: list = [None]
        if torch.distributed.get_rank() == 0:
            try:
                outcome = [self._scores()]
            except Exception as error:  # its text sent on (an exception may not pickle), then raised here as it is
                torch.distributed.broadcast_object_list([f"{type(error).__name__}: {error}"], src=0)
                raise
        torch.distributed.broadcast_object_list(outcome, src=0)
        if isinstance(outcome[0], str):
            raise RuntimeError(f"rank 0 failed to compute {type(self).__name__}: {outcome[0]}")
        return outcome[0]

    def _scores(self) -> dict[str, Tensor]:
        import torch_fidelity

        samples = dim_zero_cat(self.samples)
        fake = UInt8Images(samples.cpu())
        n = min(len(fake), len(self.real))
        self.check_sample_count(len(fake))
        cache_root = cache_directory() / "torch-fidelity"
        options = dict(cuda=samples.is_cuda, batch_size=self.batch_size,
                       feature_extractor=EXTRACTOR, feature_layer_fid=self.feature_layer,
                       feature_layer_kid=self.feature_layer, feature_layer_prc=self.feature_layer,
                       feature_extractor_weights_path=self.weights_path, kid_subset_size=min(1000, n),
                       isc_splits=ISC_SPLITS, prc_neighborhood=PRC_NEIGHBOURS, cache_root=str(cache_root),
                       cache=True, verbose=False)
        # Precision/recall compare k-NN radii within each set, so Kynkäänniemi et al. take sets of one size,
        # and torch-fidelity holds the real set's full distance matrix in host memory (N^2 floats: 10 GB
        # for CIFAR-10's 50,000 images, 106 GB for CelebA's 162,770). So they take a seeded subset of the
        # larger set (the real one, as a rule) as large as the other; FID, KID and IS keep both sets whole.
        apart = self.switches["prc"] and len(fake) != len(self.real)
        together = self.switches | {"prc": self.switches["prc"] and not apart}
        own_cache = f"lit-gan-fake-{uuid.uuid4().hex}"  # this call's own: another process may be scoring beside it
        fake_cache = own_cache if apart else None  # the fakes' features, computed once for both calls
        results = {}
        try:
            if any(together.values()):
                results = torch_fidelity.calculate_metrics(input1=fake, input2=UInt8Images(self.real),
                                                           input1_cache_name=fake_cache,
                                                           input2_cache_name=self.cache_name, **options, **together)
            if apart:
                real, real_cache = UInt8Images(self.real), self.cache_name
                if len(self.real) > n:
                    real = UInt8Images(Subset(self.real, prc_reference_indices(len(self.real), n)))
                    real_cache = f"{self.cache_name}-prc{n}"
                else:  # more samples than real images (a small image folder): a seeded subset of the samples
                    fake = UInt8Images(samples.cpu()[prc_reference_indices(len(fake), n)])
                    fake_cache = None
                results |= torch_fidelity.calculate_metrics(
                    input1=fake, input2=real, input1_cache_name=fake_cache, input2_cache_name=real_cache,
                    **options, fid=False, kid=False, isc=False, prc=True)
        finally:
            for path in cache_root.glob(f"{own_cache}-*"):
                path.unlink(missing_ok=True)
        names = {"frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid",
                 "inception_score_mean": "inception_score", "precision": "precision", "recall": "recall"}
        return {ours: torch.tensor(float(results[theirs])) for theirs, ours in names.items() if theirs in results}


def prc_reference_indices(size: int, n: int) -> list[int]:
    """The ``n`` of ``size`` images that precision/recall compare: always the same ones for a set's size."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(0))[:n].sort().values.tolist()


def random_inception_weights(path: Path) -> Path:
    """Save a randomly initialised torch-fidelity Inception as a weights file, for offline smoke tests.

    It runs torch-fidelity's whole code path without the download; its scores are not comparable with
    published ones (use the real weights file for that).
    """
    from torch_fidelity import feature_extractor_inceptionv3 as module

    # Construct without the download the constructor would start, then save the random weights.
    original_url, original_load = module.load_state_dict_from_url, module.FeatureExtractorInceptionV3.load_state_dict
    module.load_state_dict_from_url = lambda *args, **kwargs: None
    module.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    try:
        with torch.random.fork_rng():  # the same file every time, without disturbing the caller's RNG
            torch.manual_seed(0)
            model = module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
            for layer in model.modules():
                # PyTorch's default init shrinks activations layer by layer until every feature is ~0;
                # He initialisation keeps them alive, so distances between sets stay meaningful.
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    finally:
        module.load_state_dict_from_url = original_url
        module.FeatureExtractorInceptionV3.load_state_dict = original_load
    torch.save(model.state_dict(), path)
    return path
