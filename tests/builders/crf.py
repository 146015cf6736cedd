from kner.models.crf import CRFTagger


def make(tmp_path, request):
    # Light regularisation so five sentences are memorised exactly.
    return CRFTagger(c1=0.0, c2=0.001, max_iterations=100)
