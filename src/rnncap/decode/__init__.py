"""From features to words: beam search (`rnncap.decode.beam`) and the captioning pipeline."""
