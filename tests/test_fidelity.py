"""FID / KID / IS / precision-recall through torch-fidelity's real code path, with local Inception weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from lit_gan.metrics.fidelity import FidelityMetrics, random_inception_weights, to_uint8_rgb


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth"))


def images(n, seed, shift=0.0):
    generator = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, 3, 32, 32, generator=generator) * 2 - 1) + shift).clamp(-1, 1)


def scipy_fid(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


@pytest.mark.slow
def test_fid_is_zero_on_itself_grows_with_a_shift_and_matches_an_independent_computation(weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    real = images(72, seed=1)
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["64"], feature_extractor_weights_path=weights)

    def features(x):
        with torch.no_grad():
            return extractor(to_uint8_rgb(x))[0].double().numpy()

    real_features = features(real)
    results = []
    for shift in (0.0, 0.15, 0.3):
        fake = (real + shift).clamp(-1, 1)
        metric = FidelityMetrics(list(real), cache_name="test-random-32px", weights_path=weights, feature_layer="64")
        metric.update(fake)
        results.append({k: v.item() for k, v in metric.compute().items()})
        expected = scipy_fid(features(fake), real_features)
        assert results[-1]["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-3)
    assert results[0]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert results[0]["fid"] < results[1]["fid"] < results[2]["fid"]
    assert set(results[0]) == set(FidelityMetrics.goals) == {"fid", "kid", "inception_score", "precision", "recall"}
    assert results[0]["precision"] == 1.0 and results[2]["precision"] < 1.0


def test_a_missing_weights_file_is_refused_with_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.inception_weights="):
        FidelityMetrics([], cache_name="x", weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.slow
def test_precision_recall_take_a_real_subset_as_large_as_the_generated_set(weights, tmp_path):
    import torch_fidelity

    from lit_gan.metrics.digits import cache_directory
    from lit_gan.metrics.fidelity import UInt8Images, prc_reference_indices

    real, fake = images(24, seed=1), images(12, seed=2, shift=0.2)
    metric = FidelityMetrics(list(real), cache_name="test-subset-32px", weights_path=weights, feature_layer="64",
                             kid=False, isc=False)
    metric.update(fake)
    ours = {k: v.item() for k, v in metric.compute().items()}
    options = dict(feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights,
                   feature_layer_fid="64", feature_layer_prc="64", verbose=False, cuda=False)
    subset = [real[i] for i in prc_reference_indices(24, 12)]
    direct_prc = torch_fidelity.calculate_metrics(input1=UInt8Images(fake), input2=UInt8Images(subset), prc=True,
                                                  **options)
    direct_fid = torch_fidelity.calculate_metrics(input1=UInt8Images(fake), input2=UInt8Images(real), fid=True,
                                                  **options)
    assert ours["precision"] == pytest.approx(direct_prc["precision"]) and ours["recall"] == pytest.approx(direct_prc["recall"])
    assert ours["fid"] == pytest.approx(direct_fid["frechet_inception_distance"], rel=1e-5)  # against all 24
    assert sorted(set(prc_reference_indices(24, 12))) == prc_reference_indices(24, 12) and len(subset) == 12
    assert not list((cache_directory() / "torch-fidelity").glob("lit-gan-fake-*"))  # the fakes' features go


@pytest.mark.slow
@pytest.mark.parametrize("num_real, num_fake, scores", [(24, 12, ["prc"]), (12, 24, ["fid", "prc"])],
                         ids=["precision_recall_alone", "more_samples_than_real_images"])
def test_precision_recall_compare_sets_of_one_size(weights, num_real, num_fake, scores):
    # Alone, precision/recall crashed ("At least one metric must be specified"); with more samples than real
    # images (a small image folder) they compared 24 samples with 12 real images.
    import torch_fidelity

    from lit_gan.metrics.fidelity import UInt8Images, prc_reference_indices, score_switches

    real, fake = images(num_real, seed=1), images(num_fake, seed=2, shift=0.2)
    metric = FidelityMetrics(list(real), cache_name=f"test-prc-{num_real}-32px", weights_path=weights,
                             feature_layer="64", **score_switches(scores))
    metric.update(fake)
    ours = {k: v.item() for k, v in metric.compute().items()}
    n = min(num_real, num_fake)
    same_size = [x[prc_reference_indices(len(x), n)] if len(x) > n else x for x in (fake, real)]
    direct = torch_fidelity.calculate_metrics(
        input1=UInt8Images(same_size[0]), input2=UInt8Images(same_size[1]), prc=True, verbose=False, cuda=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=weights, feature_layer_prc="64")
    assert set(ours) == set(FidelityMetrics.goals_of(score_switches(scores)))
    assert (ours["precision"], ours["recall"]) == pytest.approx((direct["precision"], direct["recall"]))


def test_the_scores_to_compute_are_chosen_by_name(tmp_path):
    from lit_gan.data import ImageFolder

    with pytest.raises(ValueError, match=r"data.scores=\['fid', 'is'\] is not valid: expected a non-empty list of "
                                         r"fid, kid, isc, prc"):
        ImageFolder(str(tmp_path), scores=["fid", "is"])
    with pytest.raises(ValueError, match=r"data.scores=\[\] is not valid"):
        ImageFolder(str(tmp_path), scores=[])
    with pytest.raises(ValueError, match=r"data.scores=\['fid', 'fid'\] is not valid: .* each once"):
        ImageFolder(str(tmp_path), scores=["fid", "fid"])
    assert ImageFolder(str(tmp_path), scores=["kid", "prc"]).metric_goals == {
        "kid": "minimize", "precision": "maximize", "recall": "maximize"}


def test_too_few_samples_for_a_score_are_refused_before_training(weights):
    real = list(images(24, seed=1))
    metric = FidelityMetrics(real, cache_name="unused", weights_path=weights)
    with pytest.raises(ValueError, match=r"evaluation.num_samples=8 is not valid: expected at least 10 samples for "
                                         r"isc \(one per Inception Score split\), or isc left out of data.scores"):
        metric.check_sample_count(8)
    with pytest.raises(ValueError, match=r"evaluation.num_samples=3 is not valid: expected at least 4 samples for "
                                         r"prc, and as many real images \(there are 24\), or prc left out of data.scores"):
        FidelityMetrics(real, cache_name="unused", weights_path=weights, isc=False).check_sample_count(3)
    metric.check_sample_count(10)
    FidelityMetrics(real, cache_name="unused", weights_path=weights, isc=False).check_sample_count(4)
    fid_only = FidelityMetrics(real, cache_name="unused", weights_path=weights, kid=False, isc=False, prc=False)
    with pytest.raises(ValueError, match=r"evaluation.num_samples=1 is not valid: expected at least 2 samples for "
                                         r"fid, and as many real images \(there are 24\), or fid left out"):
        fid_only.check_sample_count(1)  # torch-fidelity: LinAlgError at the first evaluation
    fid_only.check_sample_count(2)



def _score_under_ddp(rank, init_file, weights, out):
    """One of two gloo processes: score this rank's half of the fakes, then again with rank 0's torch-fidelity
    failing; write the scores or the error of each."""
    import torch_fidelity

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    calculate = torch_fidelity.calculate_metrics
    for fail_on_rank_0 in (False, True):
        def only_on_rank_0(**kwargs):
            assert rank == 0, "torch-fidelity ran on rank 1"
            if fail_on_rank_0:
                raise OSError("no space left on device")
            return calculate(**kwargs)

        torch_fidelity.calculate_metrics = only_on_rank_0
        metric = FidelityMetrics(list(images(8, seed=1)), cache_name="test-ddp", weights_path=weights,
                                 feature_layer="64", isc=False)  # IS needs 10 samples: 16 images keep it short
        metric.update(torch.tensor_split(images(8, seed=2), 2)[rank])
        try:
            outcome = {k: v.item() for k, v in metric.compute().items()}
        except Exception as error:
            outcome = f"{type(error).__name__}: {error}"
        torch.save(outcome, f"{out}/{rank}-{fail_on_rank_0}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_ddp_rank_0_alone_scores_and_every_rank_gets_its_scores_or_its_error(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_GAN_CACHE", str(tmp_path / "cache"))
    context = torch.multiprocessing.spawn(_score_under_ddp, nprocs=2, join=False,
                                          args=(tmp_path / "init", weights, tmp_path))
    for _ in range(60):  # a rank left waiting for rank 0's answer would hang here: fail instead
        if context.join(timeout=5):
            break
    else:
        for process in context.processes:
            process.kill()
        pytest.fail("a rank is still waiting after 5 minutes")
    scores, errors = ([torch.load(tmp_path / f"{rank}-{fail}.pt", weights_only=False) for rank in range(2)]
                      for fail in (False, True))
    single = FidelityMetrics(list(images(8, seed=1)), cache_name="test-ddp", weights_path=weights,
                             feature_layer="64", isc=False)
    single.update(images(8, seed=2))
    assert scores[0] == scores[1] == {k: v.item() for k, v in single.compute().items()}
    assert errors[0] == "OSError: no space left on device"
    assert errors[1] == "RuntimeError: rank 0 failed to compute FidelityMetrics: OSError: no space left on device"


def test_without_local_weights_a_machine_that_cannot_download_them_is_told_before_training(tmp_path, monkeypatch):
    # A proxy that refuses every connection: no download can happen, whatever network the machine has.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached there
    metric = FidelityMetrics([], cache_name="x", weights_path=None)
    with pytest.raises(ValueError, match=r"data.inception_weights=None is not valid: expected a local copy of "
                                         r"torch-fidelity's Inception weights \(https://.*\) on a machine that cannot download"):
        metric.fetch_weights()
