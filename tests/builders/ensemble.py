from kner.models.crf import CRFTagger
from kner.models.ensemble import EnsembleTagger


def make(tmp_path, request):
    # Two members that memorise the five sentences (one with Kiwi's tags, one without), saved as runs.
    examples = request.getfixturevalue("overfit_examples")
    dirs = []
    for name, kiwi in (("a", True), ("b", False)):
        CRFTagger(c1=0.0, c2=0.001, max_iterations=100, kiwi=kiwi).fit(examples).save(tmp_path / "members" / name)
        dirs.append(str(tmp_path / "members" / name))
    return EnsembleTagger(members=",".join(dirs))
