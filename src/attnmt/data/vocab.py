"""Special token ids and pieces, the same for every tokenizer and model, and SentencePiece's
word-start mark."""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

PAD_PIECE = "<pad>"
UNK_PIECE = "<unk>"
BOS_PIECE = "<s>"
EOS_PIECE = "</s>"

WORD_START = "\u2581"  # SentencePiece's "▁": the piece begins a new word
