"""Native-script vocabulary and sentence templates for the embedded picture-prompted corpus.

A spoken description names one group of objects in a scene: "<count> <colour> <object(s)>" at a position,
e.g. hi "तस्वीर में बाईं ओर दो लाल गोले हैं" (in the picture, on the left, there are two red circles).
Each language has >= 3 in-domain templates and 2 templates kept for the out-of-domain test set only.
Colour words agree with the noun's gender and number where the language requires it (hi, mr, gu, pa).

Keys (scene kinds, colours, positions) are the English names used by `avalign.training.corpus.scenes`.
"""

import unicodedata
from dataclasses import dataclass

from .scenes import Scene


@dataclass(frozen=True)
class Lexicon:
    """One language: espeak-ng voice, vocabulary and templates with `{pos}`, `{np}` (noun phrase), `{be}` slots."""

    voice: str
    numbers: tuple[str, str, str]  # 1, 2, 3 (attributive forms)
    objects: dict[str, tuple[str, str, str]]  # kind -> (singular, plural, gender: "" where not marked)
    colours: dict[str, str | dict[str, str]]  # colour -> invariant form, or {"m.sg": form, ...} by agreement
    positions: dict[str, str]
    copula: tuple[str, str]  # (singular, plural)
    templates: dict[str, str]  # in-domain, template_id -> template
    ood_templates: dict[str, str]  # out-of-domain test only

    def noun_phrase(self, kind: str, colour: str, count: int) -> str:
        singular, plural, gender = self.objects[kind]
        number = "sg" if count == 1 else "pl"
        adjective = self.colours[colour]
        if isinstance(adjective, dict):
            adjective = adjective[f"{gender}.{number}"]
        return f"{self.numbers[count - 1]} {adjective} {singular if count == 1 else plural}"

    def sentence(self, template_id: str, scene: Scene) -> str:
        """The NFC-normalised description of `scene` with one of this language's templates."""
        template = {**self.templates, **self.ood_templates}[template_id]
        text = template.format(
            pos=self.positions[scene.position],
            np=self.noun_phrase(scene.kind, scene.colour, scene.count),
            be=self.copula[scene.count > 1],
        )
        return unicodedata.normalize("NFC", " ".join(text.split()))


def _agreeing(keys: tuple[str, ...], forms: str) -> dict[str, str]:
    """{"m.sg": "नीला", ...} from the agreement keys and the space-separated forms in the same order."""
    forms = forms.split()
    assert len(forms) == len(keys), (keys, forms)
    return dict(zip(keys, forms))


def _templates(frame: str, here: str, look: str) -> dict[str, dict[str, str]]:
    """The template set shared by the verb-final languages: "in the picture <pos> <np> <be>", "<pos> <np> <be>",
    "here <pos> <np> <be>"; out-of-domain: "in the picture <np> <pos> <be>" and "look, <pos> <np> <be>"."""
    return {
        "templates": {
            "t1": f"{frame} {{pos}} {{np}} {{be}}", "t2": "{pos} {np} {be}", "t3": f"{here} {{pos}} {{np}} {{be}}"
        },
        "ood_templates": {"ood1": f"{frame} {{np}} {{pos}} {{be}}", "ood2": f"{look} {{pos}} {{np}} {{be}}"},
    }


_HI_PA = ("m.sg", "m.pl", "f.sg", "f.pl")
_MR = ("m.sg", "m.pl", "f.sg", "f.pl", "n.sg", "n.pl")
_GU = _MR

LEXICONS: dict[str, Lexicon] = {
    "en": Lexicon(
        voice="en",
        numbers=("one", "two", "three"),
        objects={
            "circle": ("circle", "circles", ""), "square": ("square", "squares", ""),
            "triangle": ("triangle", "triangles", ""), "star": ("star", "stars", ""),
            "heart": ("heart", "hearts", ""), "house": ("house", "houses", ""), "tree": ("tree", "trees", ""),
            "car": ("car", "cars", ""), "fish": ("fish", "fish", ""), "bird": ("bird", "birds", ""),
            "flower": ("flower", "flowers", ""), "boat": ("boat", "boats", ""),
        },
        colours={
            c: c for c in ("red", "blue", "green", "yellow", "black", "white", "orange", "pink", "purple", "brown")
        },
        positions={
            "left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
            "centre": "in the middle",
        },
        copula=("is", "are"),
        templates={"t1": "there {be} {np} {pos}", "t2": "the picture shows {np} {pos}", "t3": "i can see {np} {pos}"},
        ood_templates={"ood1": "{pos} there {be} {np}", "ood2": "this image has {np} {pos}"},
    ),
    "hi": Lexicon(
        voice="hi",
        numbers=("एक", "दो", "तीन"),
        objects={
            "circle": ("गोला", "गोले", "m"), "square": ("वर्ग", "वर्ग", "m"), "triangle": ("त्रिकोण", "त्रिकोण", "m"),
            "star": ("तारा", "तारे", "m"), "heart": ("दिल", "दिल", "m"), "house": ("घर", "घर", "m"),
            "tree": ("पेड़", "पेड़", "m"), "car": ("कार", "कारें", "f"), "fish": ("मछली", "मछलियाँ", "f"),
            "bird": ("चिड़िया", "चिड़ियाँ", "f"), "flower": ("फूल", "फूल", "m"), "boat": ("नाव", "नावें", "f"),
        },
        colours={
            "red": "लाल", "blue": _agreeing(_HI_PA, "नीला नीले नीली नीली"),
            "green": _agreeing(_HI_PA, "हरा हरे हरी हरी"), "yellow": _agreeing(_HI_PA, "पीला पीले पीली पीली"),
            "black": _agreeing(_HI_PA, "काला काले काली काली"), "white": "सफ़ेद", "orange": "नारंगी",
            "pink": "गुलाबी", "purple": "बैंगनी", "brown": _agreeing(_HI_PA, "भूरा भूरे भूरी भूरी"),
        },
        positions={"left": "बाईं ओर", "right": "दाईं ओर", "top": "ऊपर", "bottom": "नीचे", "centre": "बीच में"},
        copula=("है", "हैं"),
        **_templates("तस्वीर में", "यहाँ", "देखो"),
    ),
    "bn": Lexicon(
        voice="bn",
        numbers=("একটি", "দুটি", "তিনটি"),  # numeral + classifier; the noun stays singular after it
        objects={
            k: (w, w, "")
            for k, w in {
                "circle": "বৃত্ত", "square": "বর্গ", "triangle": "ত্রিভুজ", "star": "তারা", "heart": "হৃদয়",
                "house": "বাড়ি", "tree": "গাছ", "car": "গাড়ি", "fish": "মাছ", "bird": "পাখি", "flower": "ফুল",
                "boat": "নৌকা",
            }.items()
        },
        colours={
            "red": "লাল", "blue": "নীল", "green": "সবুজ", "yellow": "হলুদ", "black": "কালো", "white": "সাদা",
            "orange": "কমলা", "pink": "গোলাপি", "purple": "বেগুনি", "brown": "বাদামি",
        },
        positions={"left": "বাঁ দিকে", "right": "ডান দিকে", "top": "উপরে", "bottom": "নিচে", "centre": "মাঝখানে"},
        copula=("আছে", "আছে"),
        **_templates("ছবিতে", "এখানে", "দেখো"),
    ),
    "ta": Lexicon(
        voice="ta",
        numbers=("ஒரு", "இரண்டு", "மூன்று"),
        objects={
            "circle": ("வட்டம்", "வட்டங்கள்", ""), "square": ("சதுரம்", "சதுரங்கள்", ""),
            "triangle": ("முக்கோணம்", "முக்கோணங்கள்", ""), "star": ("நட்சத்திரம்", "நட்சத்திரங்கள்", ""),
            "heart": ("இதயம்", "இதயங்கள்", ""), "house": ("வீடு", "வீடுகள்", ""), "tree": ("மரம்", "மரங்கள்", ""),
            "car": ("கார்", "கார்கள்", ""), "fish": ("மீன்", "மீன்கள்", ""), "bird": ("பறவை", "பறவைகள்", ""),
            "flower": ("பூ", "பூக்கள்", ""), "boat": ("படகு", "படகுகள்", ""),
        },
        colours={
            "red": "சிவப்பு", "blue": "நீல", "green": "பச்சை", "yellow": "மஞ்சள்", "black": "கருப்பு",
            "white": "வெள்ளை", "orange": "ஆரஞ்சு", "pink": "இளஞ்சிவப்பு", "purple": "ஊதா", "brown": "பழுப்பு",
        },
        positions={
            "left": "இடது பக்கத்தில்", "right": "வலது பக்கத்தில்", "top": "மேலே", "bottom": "கீழே",
            "centre": "நடுவில்",
        },
        copula=("உள்ளது", "உள்ளன"),
        **_templates("படத்தில்", "இங்கே", "பாருங்கள்"),
    ),
    "te": Lexicon(
        voice="te",
        numbers=("ఒక", "రెండు", "మూడు"),
        objects={
            "circle": ("వృత్తం", "వృత్తాలు", ""), "square": ("చతురస్రం", "చతురస్రాలు", ""),
            "triangle": ("త్రిభుజం", "త్రిభుజాలు", ""), "star": ("నక్షత్రం", "నక్షత్రాలు", ""),
            "heart": ("హృదయం", "హృదయాలు", ""), "house": ("ఇల్లు", "ఇళ్ళు", ""), "tree": ("చెట్టు", "చెట్లు", ""),
            "car": ("కారు", "కార్లు", ""), "fish": ("చేప", "చేపలు", ""), "bird": ("పక్షి", "పక్షులు", ""),
            "flower": ("పువ్వు", "పువ్వులు", ""), "boat": ("పడవ", "పడవలు", ""),
        },
        colours={  # "<colour> రంగు" (colour-noun + "colour"), the usual attributive form
            c: f"{w} రంగు"
            for c, w in {
                "red": "ఎరుపు", "blue": "నీలం", "green": "ఆకుపచ్చ", "yellow": "పసుపు", "black": "నలుపు",
                "white": "తెలుపు", "orange": "నారింజ", "pink": "గులాబీ", "purple": "ఊదా", "brown": "గోధుమ",
            }.items()
        },
        positions={"left": "ఎడమ వైపు", "right": "కుడి వైపు", "top": "పైన", "bottom": "కింద", "centre": "మధ్యలో"},
        copula=("ఉంది", "ఉన్నాయి"),
        **_templates("చిత్రంలో", "ఇక్కడ", "చూడండి"),
    ),
    "mr": Lexicon(
        voice="mr",
        numbers=("एक", "दोन", "तीन"),
        objects={
            "circle": ("वर्तुळ", "वर्तुळे", "n"), "square": ("चौरस", "चौरस", "m"),
            "triangle": ("त्रिकोण", "त्रिकोण", "m"), "star": ("तारा", "तारे", "m"), "heart": ("हृदय", "हृदये", "n"),
            "house": ("घर", "घरे", "n"), "tree": ("झाड", "झाडे", "n"), "car": ("गाडी", "गाड्या", "f"),
            "fish": ("मासा", "मासे", "m"), "bird": ("पक्षी", "पक्षी", "m"), "flower": ("फूल", "फुले", "n"),
            "boat": ("होडी", "होड्या", "f"),
        },
        colours={
            "red": "लाल", "blue": _agreeing(_MR, "निळा निळे निळी निळ्या निळे निळी"),
            "green": _agreeing(_MR, "हिरवा हिरवे हिरवी हिरव्या हिरवे हिरवी"),
            "yellow": _agreeing(_MR, "पिवळा पिवळे पिवळी पिवळ्या पिवळे पिवळी"),
            "black": _agreeing(_MR, "काळा काळे काळी काळ्या काळे काळी"),
            "white": _agreeing(_MR, "पांढरा पांढरे पांढरी पांढऱ्या पांढरे पांढरी"), "orange": "नारिंगी",
            "pink": "गुलाबी", "purple": _agreeing(_MR, "जांभळा जांभळे जांभळी जांभळ्या जांभळे जांभळी"),
            "brown": "तपकिरी",
        },
        positions={
            "left": "डावीकडे", "right": "उजवीकडे", "top": "वरच्या बाजूला", "bottom": "खालच्या बाजूला",
            "centre": "मध्यभागी",
        },
        copula=("आहे", "आहेत"),
        **_templates("चित्रात", "इथे", "बघा"),
    ),
    "kn": Lexicon(
        voice="kn",
        numbers=("ಒಂದು", "ಎರಡು", "ಮೂರು"),
        objects={
            "circle": ("ವೃತ್ತ", "ವೃತ್ತಗಳು", ""), "square": ("ಚೌಕ", "ಚೌಕಗಳು", ""),
            "triangle": ("ತ್ರಿಕೋನ", "ತ್ರಿಕೋನಗಳು", ""),
            "star": ("ನಕ್ಷತ್ರ", "ನಕ್ಷತ್ರಗಳು", ""), "heart": ("ಹೃದಯ", "ಹೃದಯಗಳು", ""), "house": ("ಮನೆ", "ಮನೆಗಳು", ""),
            "tree": ("ಮರ", "ಮರಗಳು", ""), "car": ("ಕಾರು", "ಕಾರುಗಳು", ""), "fish": ("ಮೀನು", "ಮೀನುಗಳು", ""),
            "bird": ("ಹಕ್ಕಿ", "ಹಕ್ಕಿಗಳು", ""), "flower": ("ಹೂವು", "ಹೂವುಗಳು", ""), "boat": ("ದೋಣಿ", "ದೋಣಿಗಳು", ""),
        },
        colours={
            "red": "ಕೆಂಪು", "blue": "ನೀಲಿ", "green": "ಹಸಿರು", "yellow": "ಹಳದಿ", "black": "ಕಪ್ಪು", "white": "ಬಿಳಿ",
            "orange": "ಕಿತ್ತಳೆ", "pink": "ಗುಲಾಬಿ", "purple": "ನೇರಳೆ", "brown": "ಕಂದು",
        },
        positions={
            "left": "ಎಡಭಾಗದಲ್ಲಿ", "right": "ಬಲಭಾಗದಲ್ಲಿ", "top": "ಮೇಲೆ", "bottom": "ಕೆಳಗೆ", "centre": "ಮಧ್ಯದಲ್ಲಿ",
        },
        copula=("ಇದೆ", "ಇವೆ"),
        **_templates("ಚಿತ್ರದಲ್ಲಿ", "ಇಲ್ಲಿ", "ನೋಡಿ"),
    ),
    "gu": Lexicon(
        voice="gu",
        numbers=("એક", "બે", "ત્રણ"),
        objects={
            "circle": ("વર્તુળ", "વર્તુળો", "n"), "square": ("ચોરસ", "ચોરસ", "m"),
            "triangle": ("ત્રિકોણ", "ત્રિકોણ", "m"), "star": ("તારો", "તારા", "m"), "heart": ("હૃદય", "હૃદયો", "n"),
            "house": ("ઘર", "ઘરો", "n"), "tree": ("ઝાડ", "ઝાડ", "n"), "car": ("ગાડી", "ગાડીઓ", "f"),
            "fish": ("માછલી", "માછલીઓ", "f"), "bird": ("પક્ષી", "પક્ષીઓ", "n"), "flower": ("ફૂલ", "ફૂલો", "n"),
            "boat": ("હોડી", "હોડીઓ", "f"),
        },
        colours={
            "red": "લાલ", "blue": "વાદળી", "green": _agreeing(_GU, "લીલો લીલા લીલી લીલી લીલું લીલાં"),
            "yellow": _agreeing(_GU, "પીળો પીળા પીળી પીળી પીળું પીળાં"),
            "black": _agreeing(_GU, "કાળો કાળા કાળી કાળી કાળું કાળાં"), "white": "સફેદ", "orange": "નારંગી",
            "pink": "ગુલાબી", "purple": "જાંબલી", "brown": "કથ્થઈ",
        },
        positions={"left": "ડાબી બાજુ", "right": "જમણી બાજુ", "top": "ઉપર", "bottom": "નીચે", "centre": "વચ્ચે"},
        copula=("છે", "છે"),
        **_templates("ચિત્રમાં", "અહીં", "જુઓ"),
    ),
    "ml": Lexicon(
        voice="ml",
        numbers=("ഒരു", "രണ്ട്", "മൂന്ന്"),
        objects={
            "circle": ("വൃത്തം", "വൃത്തങ്ങൾ", ""), "square": ("ചതുരം", "ചതുരങ്ങൾ", ""),
            "triangle": ("ത്രികോണം", "ത്രികോണങ്ങൾ", ""), "star": ("നക്ഷത്രം", "നക്ഷത്രങ്ങൾ", ""),
            "heart": ("ഹൃദയം", "ഹൃദയങ്ങൾ", ""), "house": ("വീട്", "വീടുകൾ", ""), "tree": ("മരം", "മരങ്ങൾ", ""),
            "car": ("കാർ", "കാറുകൾ", ""), "fish": ("മീൻ", "മീനുകൾ", ""), "bird": ("പക്ഷി", "പക്ഷികൾ", ""),
            "flower": ("പൂവ്", "പൂക്കൾ", ""), "boat": ("വള്ളം", "വള്ളങ്ങൾ", ""),
        },
        colours={
            "red": "ചുവന്ന", "blue": "നീല", "green": "പച്ച", "yellow": "മഞ്ഞ", "black": "കറുത്ത", "white": "വെളുത്ത",
            "orange": "ഓറഞ്ച്", "pink": "പിങ്ക്", "purple": "പർപ്പിൾ", "brown": "തവിട്ട്",
        },
        positions={
            "left": "ഇടതുവശത്ത്", "right": "വലതുവശത്ത്", "top": "മുകളിൽ", "bottom": "താഴെ", "centre": "നടുവിൽ",
        },
        copula=("ഉണ്ട്", "ഉണ്ട്"),
        **_templates("ചിത്രത്തിൽ", "ഇവിടെ", "നോക്കൂ"),
    ),
    "pa": Lexicon(
        voice="pa",
        numbers=("ਇੱਕ", "ਦੋ", "ਤਿੰਨ"),
        objects={
            "circle": ("ਗੋਲਾ", "ਗੋਲੇ", "m"), "square": ("ਵਰਗ", "ਵਰਗ", "m"), "triangle": ("ਤਿਕੋਣ", "ਤਿਕੋਣ", "m"),
            "star": ("ਤਾਰਾ", "ਤਾਰੇ", "m"), "heart": ("ਦਿਲ", "ਦਿਲ", "m"), "house": ("ਘਰ", "ਘਰ", "m"),
            "tree": ("ਰੁੱਖ", "ਰੁੱਖ", "m"), "car": ("ਕਾਰ", "ਕਾਰਾਂ", "f"), "fish": ("ਮੱਛੀ", "ਮੱਛੀਆਂ", "f"),
            "bird": ("ਚਿੜੀ", "ਚਿੜੀਆਂ", "f"), "flower": ("ਫੁੱਲ", "ਫੁੱਲ", "m"), "boat": ("ਕਿਸ਼ਤੀ", "ਕਿਸ਼ਤੀਆਂ", "f"),
        },
        colours={
            "red": "ਲਾਲ", "blue": _agreeing(_HI_PA, "ਨੀਲਾ ਨੀਲੇ ਨੀਲੀ ਨੀਲੀਆਂ"),
            "green": _agreeing(_HI_PA, "ਹਰਾ ਹਰੇ ਹਰੀ ਹਰੀਆਂ"), "yellow": _agreeing(_HI_PA, "ਪੀਲਾ ਪੀਲੇ ਪੀਲੀ ਪੀਲੀਆਂ"),
            "black": _agreeing(_HI_PA, "ਕਾਲਾ ਕਾਲੇ ਕਾਲੀ ਕਾਲੀਆਂ"),
            "white": _agreeing(_HI_PA, "ਚਿੱਟਾ ਚਿੱਟੇ ਚਿੱਟੀ ਚਿੱਟੀਆਂ"),
            "orange": "ਸੰਤਰੀ", "pink": "ਗੁਲਾਬੀ", "purple": "ਜਾਮਨੀ", "brown": _agreeing(_HI_PA, "ਭੂਰਾ ਭੂਰੇ ਭੂਰੀ ਭੂਰੀਆਂ"),
        },
        positions={"left": "ਖੱਬੇ ਪਾਸੇ", "right": "ਸੱਜੇ ਪਾਸੇ", "top": "ਉੱਪਰ", "bottom": "ਹੇਠਾਂ", "centre": "ਵਿਚਕਾਰ"},
        copula=("ਹੈ", "ਹਨ"),
        **_templates("ਤਸਵੀਰ ਵਿੱਚ", "ਇੱਥੇ", "ਦੇਖੋ"),
    ),
}  # fmt: skip
