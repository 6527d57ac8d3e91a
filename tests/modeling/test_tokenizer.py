"""Tests for the multilingual subword tokenizer (avalign.modeling.tokenization_fastconformer)."""

import json
import unicodedata
from collections import Counter

import pytest
from transformers import AutoTokenizer
from transformers.models.parakeet import ParakeetTokenizer

from avalign.modeling.tokenization_fastconformer import (
    BYTE_TOKENS,
    NUM_RESERVED_IDS,
    blank_id,
    train_tokenizer,
    uncovered_characters,
)

SENTENCES_BY_SCRIPT = {
    "Devanagari": [
        "लाल गोला बाईं ओर है",
        "नीला वर्ग दाईं ओर है",
        "हरा त्रिभुज बीच में है",
        "दो पीले तारे ऊपर हैं",
        "तीन काले घेरे नीचे हैं",
        "आज मौसम बहुत अच्छा है",
        "मैं स्कूल जा रहा हूँ",
        "बच्चे मैदान में खेल रहे हैं",
        "यह किताब मेरी है",
        "पानी ठंडा है",
    ],
    "Bengali": [
        "লাল বৃত্তটি বাম দিকে আছে",
        "নীল বর্গটি ডান দিকে আছে",
        "সবুজ ত্রিভুজটি মাঝখানে আছে",
        "দুটি হলুদ তারা উপরে আছে",
        "তিনটি কালো বৃত্ত নিচে আছে",
        "আজ আবহাওয়া খুব ভালো",
        "আমি স্কুলে যাচ্ছি",
        "শিশুরা মাঠে খেলছে",
        "এই বইটি আমার",
        "জল ঠান্ডা",
    ],
    "Tamil": [
        "சிவப்பு வட்டம் இடது பக்கத்தில் உள்ளது",
        "நீல சதுரம் வலது பக்கத்தில் உள்ளது",
        "பச்சை முக்கோணம் நடுவில் உள்ளது",
        "இரண்டு மஞ்சள் நட்சத்திரங்கள் மேலே உள்ளன",
        "மூன்று கருப்பு வட்டங்கள் கீழே உள்ளன",
        "இன்று வானிலை மிகவும் நன்றாக உள்ளது",
        "நான் பள்ளிக்குச் செல்கிறேன்",
        "குழந்தைகள் மைதானத்தில் விளையாடுகிறார்கள்",
        "இந்த புத்தகம் என்னுடையது",
        "தண்ணீர் குளிர்ச்சியாக உள்ளது",
    ],
    "Telugu": [
        "ఎరుపు వృత్తం ఎడమ వైపు ఉంది",
        "నీలం చతురస్రం కుడి వైపు ఉంది",
        "ఆకుపచ్చ త్రిభుజం మధ్యలో ఉంది",
        "రెండు పసుపు నక్షత్రాలు పైన ఉన్నాయి",
        "మూడు నల్ల వృత్తాలు కింద ఉన్నాయి",
        "ఈ రోజు వాతావరణం చాలా బాగుంది",
        "నేను బడికి వెళ్తున్నాను",
        "పిల్లలు మైదానంలో ఆడుతున్నారు",
        "ఈ పుస్తకం నాది",
        "నీళ్ళు చల్లగా ఉన్నాయి",
    ],
    "Kannada": [
        "ಕೆಂಪು ವೃತ್ತ ಎಡಭಾಗದಲ್ಲಿದೆ",
        "ನೀಲಿ ಚೌಕ ಬಲಭಾಗದಲ್ಲಿದೆ",
        "ಹಸಿರು ತ್ರಿಕೋನ ಮಧ್ಯದಲ್ಲಿದೆ",
        "ಎರಡು ಹಳದಿ ನಕ್ಷತ್ರಗಳು ಮೇಲಿವೆ",
        "ಮೂರು ಕಪ್ಪು ವೃತ್ತಗಳು ಕೆಳಗಿವೆ",
        "ಇಂದು ಹವಾಮಾನ ತುಂಬಾ ಚೆನ್ನಾಗಿದೆ",
        "ನಾನು ಶಾಲೆಗೆ ಹೋಗುತ್ತಿದ್ದೇನೆ",
        "ಮಕ್ಕಳು ಮೈದಾನದಲ್ಲಿ ಆಡುತ್ತಿದ್ದಾರೆ",
        "ಈ ಪುಸ್ತಕ ನನ್ನದು",
        "ನೀರು ತಣ್ಣಗಿದೆ",
    ],
    "Gujarati": [
        "લાલ વર્તુળ ડાબી બાજુ છે",
        "વાદળી ચોરસ જમણી બાજુ છે",
        "લીલો ત્રિકોણ વચ્ચે છે",
        "બે પીળા તારા ઉપર છે",
        "ત્રણ કાળા વર્તુળ નીચે છે",
        "આજે હવામાન ખૂબ સરસ છે",
        "હું શાળાએ જાઉં છું",
        "બાળકો મેદાનમાં રમે છે",
        "આ પુસ્તક મારું છે",
        "પાણી ઠંડું છે",
    ],
    "Malayalam": [
        "ചുവന്ന വൃത്തം ഇടതുവശത്താണ്",
        "നീല ചതുരം വലതുവശത്താണ്",
        "പച്ച ത്രികോണം നടുവിലാണ്",
        "രണ്ട് മഞ്ഞ നക്ഷത്രങ്ങൾ മുകളിലുണ്ട്",
        "മൂന്ന് കറുത്ത വൃത്തങ്ങൾ താഴെയുണ്ട്",
        "ഇന്ന് കാലാവസ്ഥ വളരെ നല്ലതാണ്",
        "ഞാൻ സ്കൂളിലേക്ക് പോകുന്നു",
        "കുട്ടികൾ മൈതാനത്ത് കളിക്കുന്നു",
        "ഈ പുസ്തകം എന്റേതാണ്",
        "വെള്ളം തണുത്തതാണ്",
    ],
    "Gurmukhi": [
        "ਲਾਲ ਗੋਲਾ ਖੱਬੇ ਪਾਸੇ ਹੈ",
        "ਨੀਲਾ ਵਰਗ ਸੱਜੇ ਪਾਸੇ ਹੈ",
        "ਹਰਾ ਤਿਕੋਣ ਵਿਚਕਾਰ ਹੈ",
        "ਦੋ ਪੀਲੇ ਤਾਰੇ ਉੱਪਰ ਹਨ",
        "ਤਿੰਨ ਕਾਲੇ ਗੋਲੇ ਹੇਠਾਂ ਹਨ",
        "ਅੱਜ ਮੌਸਮ ਬਹੁਤ ਵਧੀਆ ਹੈ",
        "ਮੈਂ ਸਕੂਲ ਜਾ ਰਿਹਾ ਹਾਂ",
        "ਬੱਚੇ ਮੈਦਾਨ ਵਿੱਚ ਖੇਡ ਰਹੇ ਹਨ",
        "ਇਹ ਕਿਤਾਬ ਮੇਰੀ ਹੈ",
        "ਪਾਣੀ ਠੰਡਾ ਹੈ",
    ],
    "Latin": [
        "the red circle is on the left",
        "the blue square is on the right",
        "a green triangle is in the middle",
        "two yellow stars are at the top",
        "three black circles are at the bottom",
        "the weather is very nice today",
        "I am going to school",
        "the children are playing in the field",
        "this book is mine",
        "the water is cold",
    ],
}
CORPUS = [sentence for sentences in SENTENCES_BY_SCRIPT.values() for sentence in sentences]
VOCAB_SIZE = 800
UNSEEN_TEXT = "Ωmega ñandú 日本語 😀 ສະບາຍດີ"  # Greek, accented Latin, CJK, emoji, Lao: none of them in CORPUS


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=VOCAB_SIZE)


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def round_trip(tokenizer, text):
    """Decode of encode, without CTC grouping (a plain token sequence may repeat a token)."""
    return tokenizer.decode(encode(tokenizer, text), group_tokens=False)


def test_vocab_size_is_honoured_and_layout(tokenizer):
    vocab = tokenizer.get_vocab()
    assert isinstance(tokenizer, ParakeetTokenizer)
    assert len(tokenizer) == tokenizer.vocab_size == VOCAB_SIZE
    assert sorted(vocab.values()) == list(range(VOCAB_SIZE))
    assert tokenizer.unk_token_id == 0
    assert [vocab[token] for token in BYTE_TOKENS] == list(range(1, 257))
    assert len(train_tokenizer(CORPUS, vocab_size=NUM_RESERVED_IDS + 1)) == NUM_RESERVED_IDS + 1


def test_blank_is_last_and_is_pad(tokenizer):
    assert blank_id(tokenizer) == VOCAB_SIZE - 1 == tokenizer.pad_token_id
    assert tokenizer.convert_ids_to_tokens(blank_id(tokenizer)) == tokenizer.pad_token


def test_blank_id_rejects_a_tokenizer_whose_pad_is_not_last():
    shifted = train_tokenizer(CORPUS, vocab_size=VOCAB_SIZE)
    shifted.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="not the last id"):
        blank_id(shifted)


@pytest.mark.parametrize("script", SENTENCES_BY_SCRIPT)
def test_round_trip_per_script_with_learned_subwords(tokenizer, script):
    sentences = SENTENCES_BY_SCRIPT[script]
    for sentence in sentences:
        assert round_trip(tokenizer, sentence) == sentence
        assert uncovered_characters(tokenizer, sentence) == set()
        assert not set(encode(tokenizer, sentence)) & {tokenizer.unk_token_id, blank_id(tokenizer)}
    num_tokens = sum(len(encode(tokenizer, sentence)) for sentence in sentences)
    assert num_tokens < sum(len(sentence) for sentence in sentences), f"{script}: no multi-character subwords"


def test_unseen_characters_round_trip_through_bytes(tokenizer):
    assert round_trip(tokenizer, UNSEEN_TEXT) == UNSEEN_TEXT
    uncovered = uncovered_characters(tokenizer, UNSEEN_TEXT)
    assert {"Ω", "ñ", "日", "😀"} <= uncovered
    assert not uncovered & set("mega")
    tokens = tokenizer.convert_ids_to_tokens(encode(tokenizer, "😀"))
    assert tokens[1:] == [f"<0x{byte:02X}>" for byte in "😀".encode()]


def test_small_vocab_keeps_most_frequent_characters_and_bytes_cover_the_rest():
    num_learned = 30
    small = train_tokenizer(CORPUS, vocab_size=NUM_RESERVED_IDS + num_learned)
    counts = Counter("".join(CORPUS).replace(" ", ""))
    uncovered = uncovered_characters(small, " ".join(CORPUS))
    covered = set(counts) - uncovered
    assert len(covered) == num_learned - 1  # the alphabet fills the budget; "▁" takes one slot
    assert min(counts[char] for char in covered) >= max(counts[char] for char in uncovered)
    for sentence in CORPUS:
        assert round_trip(small, sentence) == sentence


def test_normalisation_nfc_and_whitespace(tokenizer):
    decomposed = unicodedata.normalize("NFD", "  the  café\tis\n cold ")
    assert round_trip(tokenizer, decomposed) == "the café is cold"


def test_ctc_decode_groups_repeats_and_drops_blanks(tokenizer):
    ids = encode(tokenizer, "the red circle")
    blank = blank_id(tokenizer)
    ctc_frames = [blank]
    for token in ids:
        ctc_frames += [token, token, blank]  # every token repeated, then a blank
    ctc_frames += [blank]
    assert tokenizer.batch_decode([ctc_frames, ids]) == ["the red circle", "the red circle"]



def test_transducer_decode_keeps_repeats(tokenizer):
    word_ids = encode(tokenizer, "the")
    transducer_ids = word_ids + word_ids  # a transducer emits a repeated token without a blank in between
    assert tokenizer.batch_decode([transducer_ids], group_tokens=False) == ["the the"]
    assert tokenizer.batch_decode([transducer_ids]) == ["the"]  # CTC grouping merges them


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is ParakeetTokenizer
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert blank_id(loaded) == blank_id(tokenizer)
    for text in [*CORPUS, UNSEEN_TEXT]:
        assert encode(loaded, text) == encode(tokenizer, text)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "ParakeetTokenizer" and "auto_map" not in config
    assert sorted(path.suffix for path in tmp_path.iterdir()) == [".json", ".json"]  # no remote code shipped


def test_training_is_deterministic(tokenizer):
    again = train_tokenizer(list(CORPUS), vocab_size=VOCAB_SIZE)
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="no characters"):
        train_tokenizer([])
    with pytest.raises(ValueError, match="no characters"):
        train_tokenizer(["", "   "])
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(CORPUS, vocab_size=NUM_RESERVED_IDS)
    with pytest.raises(TypeError, match="row 1"):
        train_tokenizer(["fine", None])
    with pytest.raises(ValueError, match="yields only"):
        train_tokenizer(["a tiny corpus"], vocab_size=10_000)
