from kner.models.bilstm_crf import BiLSTMCRFTagger


def make(tmp_path, request):
    # Small, no dropout, fast-rising learning rate: five sentences are memorised in seconds.
    return BiLSTMCRFTagger(char_dim=32, bigram_dim=16, eojeol_dim=8, hidden=32, kiwi_vectors=8, kiwi_vocab=100,
                           dropout=0.0, batch_size=2,
                           lr=0.02, warmup_steps=1, max_epochs=40, patience=40, device="cpu", num_threads=1)
