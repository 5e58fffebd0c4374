#!/usr/bin/python3
"""make_corpus.py: writes corpus.jsonl, the strings the tokenizer conformance test encodes.

One JSON string per line. Deterministic (fixed seed), so the committed file can be
regenerated and reviewed: `/usr/bin/python3 tests/tokenizer/make_corpus.py > tests/tokenizer/corpus.jsonl`.

It covers what tends to break a byte-level BPE: many scripts, emoji sequences (ZWJ, skin
tones, flags, keycaps), code, numbers of every length, whitespace runs of every kind,
contractions in any case, special tokens inline and near-misses of them, combining marks
and text that is not in NFC.

Left out on purpose, because the reference (transformers.js) can differ from the Hugging
Face tokenizer there by construction: U+0085 and U+FEFF (JavaScript's \\s disagrees with
Unicode's White_Space on both; tandem follows White_Space, as HF's Oniguruma does). Only
code points assigned in Python's Unicode database (14.0 on Debian 12, PCRE2 10.42's version)
are drawn, so the regex engines' Unicode versions agree on every class.
"""
import json
import random
import sys
import unicodedata

rng = random.Random(20261129)
out = []


def add(s):
    if s and "\x00" not in s and "\x85" not in s and "\ufeff" not in s:
        out.append(s)


def assigned(cp):
    c = chr(cp)
    return unicodedata.category(c) not in ("Cn", "Cs", "Co")


def pick(lo, hi, n):
    s = []
    while len(s) < n:
        cp = rng.randint(lo, hi)
        if assigned(cp):
            s.append(chr(cp))
    return "".join(s)


# --- natural text in many scripts -----------------------------------------------------
PHRASES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today?",
    "Ça va très bien, merci. L'été dernier, nous sommes allés à Paris.",
    "Größere Übungen fördern die Fähigkeit, schnell zu lernen.",
    "¿Dónde está la biblioteca? ¡Vamos mañana!",
    "A língua portuguesa é falada em São Paulo e Lisboa.",
    "Zażółć gęślą jaźń. Český jazyk: příliš žluťoučký kůň.",
    "Türkçe: Iğdır'da ılık bir gün, şimdi çay içiyoruz.",
    "Tiếng Việt: Tôi yêu đất nước Việt Nam xinh đẹp.",
    "Ελληνικά: Καλημέρα κόσμε, τι κάνεις;",
    "Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Українська: Гей, хлопці, не вспію — ґанок їжакові.",
    "עברית: שלום עולם, מה שלומך היום?",
    "العربية: مرحبا بالعالم، كيف حالك اليوم؟",
    "فارسی: سلام دنیا، امروز چطوری؟",
    "हिन्दी: नमस्ते दुनिया, आप कैसे हैं?",
    "বাংলা: হ্যালো বিশ্ব, আপনি কেমন আছেন?",
    "தமிழ்: வணக்கம் உலகம், நீங்கள் எப்படி இருக்கிறீர்கள்?",
    "తెలుగు: హలో ప్రపంచం",
    "ภาษาไทย: สวัสดีชาวโลก วันนี้คุณเป็นอย่างไรบ้าง",
    "ພາສາລາວ: ສະບາຍດີ",
    "中文：你好，世界！今天天气很好，我们去公园散步吧。",
    "繁體中文：臺灣的夜市非常熱鬧。",
    "日本語：こんにちは世界。今日はいい天気ですね。カタカナもひらがなも。",
    "한국어: 안녕하세요 세계! 오늘 날씨가 좋네요.",
    "Հայերեն: Բարեւ աշխարհ",
    "ქართული: გამარჯობა მსოფლიო",
    "አማርኛ: ሰላም ልዑል",
    "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ mongolian script",
    "ᏣᎳᎩ cherokee ᎦᏬᏂᎯᏍᏗ",
    "ꦗꦮ javanese ꦲꦏ꧀ꦱꦫ",
    "Ⲙⲉⲧⲣⲉⲙⲛ̀ⲭⲏⲙⲓ coptic",
    "𐌲𐌿𐍄𐌹𐍃𐌺 gothic 𓀀𓀁 hieroglyphs 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "Mixed: hello мир 世界 عالم עולם κόσμος 123 ١٢٣ ४५६ ๗๘๙",
    "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ １２３ ＡＢＣ！",
    "ﬁﬂ ligatures ﬀ and ½ ¼ ² ³ ™ © ® ° µ",
]
for p in PHRASES:
    add(p)
    add(" " + p)
    add(p + "\n")
    add(p.upper())
    add(p.lower())

BLOCKS = [
    (0x0041, 0x007A), (0x00C0, 0x024F), (0x0250, 0x02FF), (0x0370, 0x03FF), (0x0400, 0x04FF),
    (0x0530, 0x058F), (0x0590, 0x05FF), (0x0600, 0x06FF), (0x0750, 0x077F), (0x0900, 0x097F),
    (0x0980, 0x09FF), (0x0A00, 0x0A7F), (0x0B80, 0x0BFF), (0x0C00, 0x0C7F), (0x0D00, 0x0D7F),
    (0x0E00, 0x0E7F), (0x0E80, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x10A0, 0x10FF),
    (0x1100, 0x11FF), (0x1200, 0x137F), (0x13A0, 0x13FF), (0x1780, 0x17FF), (0x1800, 0x18AF),
    (0x1E00, 0x1EFF), (0x1F00, 0x1FFF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2100, 0x214F),
    (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2500, 0x257F), (0x2600, 0x26FF), (0x2700, 0x27BF),
    (0x3000, 0x303F), (0x3040, 0x309F), (0x30A0, 0x30FF), (0x3100, 0x312F), (0x3130, 0x318F),
    (0x4E00, 0x9FFF), (0xA000, 0xA48F), (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFB00, 0xFB4F),
    (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF), (0x1F300, 0x1F5FF),
    (0x1F600, 0x1F64F), (0x1F900, 0x1F9FF), (0x20000, 0x2A6DF), (0x0300, 0x036F),
]
for lo, hi in BLOCKS:
    for _ in range(12):
        words = [pick(lo, hi, rng.randint(1, 8)) for _ in range(rng.randint(1, 5))]
        sep = rng.choice([" ", "  ", "\n", ", ", "", "\t", "-", ". "])
        add(sep.join(words))

# --- emoji ----------------------------------------------------------------------------
ZWJ = "\u200d"
TONES = ["\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
EMOJI = [
    "😀", "😂", "🥲", "❤️", "👍", "🙏", "🔥", "✨", "🎉", "🚀", "🌍", "🍕", "🐍", "🦀", "☕", "⚽",
    "👨" + ZWJ + "👩" + ZWJ + "👧" + ZWJ + "👦", "👩" + ZWJ + "💻", "🧑" + ZWJ + "🚀",
    "🏳️" + ZWJ + "🌈", "🏴" + ZWJ + "☠️", "👁️" + ZWJ + "🗨️", "❤️" + ZWJ + "🔥", "🐕" + ZWJ + "🦺",
    "🇺🇸", "🇯🇵", "🇫🇷", "🇩🇪", "🇨🇳", "🇧🇷", "🇮🇳", "🇺🇦", "🏴\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
    "1️⃣", "#️⃣", "*️⃣", "©️", "™️", "☺️", "✌🏽", "👋🏿", "🤝🏻", "👩🏾" + ZWJ + "🔬",
    "🧑🏻" + ZWJ + "🤝" + ZWJ + "🧑🏿", "💏🏼", "🫶🏽", "🫠", "🥹",
]
for e in EMOJI:
    add(e)
    add("I " + e + " it")
    add(e * 3)
for _ in range(120):
    parts = []
    for _ in range(rng.randint(1, 6)):
        e = rng.choice(EMOJI)
        if rng.random() < 0.3:
            e = rng.choice(["👋", "👍", "🙌", "👩", "🧑", "👶"]) + rng.choice(TONES)
        parts.append(e)
    glue = rng.choice(["", " ", "!", " and ", "\n", ZWJ])
    add(rng.choice(["", "ok ", "Wow"]) + glue.join(parts) + rng.choice(["", ".", " lol", "\n"]))

# --- code -----------------------------------------------------------------------------
CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)",
    "class Foo(Base):\n\tdef __init__(self, *args, **kwargs):\n\t\tsuper().__init__(*args, **kwargs)\n",
    "#include <stdio.h>\n\nint main(void)\n{\n    printf(\"hello %d\\n\", 42);\n    return 0;\n}\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * c[i]; }",
    "static inline uint32_t rotl(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }",
    "const f = async (x) => { await fetch(`/api/${x}?q=1&r=2`); return x ?? null; };",
    "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}",
    "func main() {\n\tch := make(chan int, 3)\n\tgo func() { ch <- 1 }()\n\tfmt.Println(<-ch)\n}",
    "<!DOCTYPE html>\n<html><head><title>Test</title></head><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "{\"name\": \"tandem\", \"version\": \"1.0.0\", \"deps\": {\"a\": [1, 2, 3], \"b\": null, \"c\": true}}",
    "SELECT id, name FROM users WHERE age >= 21 AND name LIKE '%son' ORDER BY id DESC LIMIT 10;",
    "#!/bin/sh\nset -eu\nfor f in *.txt; do\n  wc -l \"$f\" | awk '{print $1}'\ndone\n",
    "x = [i**2 for i in range(100) if i % 3 == 0]  # squares\r\ny = {k: v for k, v in zip(a, b)}\r\n",
    "public static void main(String[] args) throws IOException { System.out.println(\"Hi\"); }",
    "template <typename T> constexpr T max(const T& a, const T& b) noexcept { return a < b ? b : a; }",
    "$ git commit -m 'fix: off-by-one in parser' && git push origin HEAD:refs/for/main",
    "    \n    \n\n\t\t}\n\t}\n}\n",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f&=6;g|=7;h^=8;i<<=9;j>>=10;k!==l;m===n;o=>p;q->r;s::t",
    "regex = r'^(?P<user>[\\w.+-]+)@(?P<host>[\\w-]+\\.)+[a-z]{2,}$'",
    "\\documentclass{article}\n\\begin{document}\n$\\int_0^\\infty e^{-x^2}\\,dx = \\frac{\\sqrt{\\pi}}{2}$\n\\end{document}",
    "    def __repr__(self) -> str:\n        return f\"{type(self).__name__}({self.x!r}, {self.y!r})\"",
    "// 注释：计算总和\nlet 合计 = 数组.reduce((a, b) => a + b, 0);",
    "matrix = [[1,2,3],[4,5,6],[7,8,9]]\nprint(matrix[1][2])",
    "0x7fffffff 0b1010_1010 0o755 1e-9 3.14159f 6.02e23 1_000_000 .5 5. -0.0",
]
for c in CODE:
    add(c)
    add(c.replace("    ", "\t"))
    add(c.replace("\n", "\r\n"))
    add(c.replace(" ", "  "))

# --- numbers --------------------------------------------------------------------------
for n in range(1, 41):
    add("".join(rng.choice("0123456789") for _ in range(n)))
    add("x" + "".join(rng.choice("0123456789") for _ in range(n)) + "y")
    add(" " + "".join(rng.choice("0123456789") for _ in range(n)))
for _ in range(150):
    kind = rng.randint(0, 7)
    if kind == 0:
        s = str(rng.randint(-10**12, 10**12))
    elif kind == 1:
        s = "%.*f" % (rng.randint(0, 9), rng.uniform(-1e6, 1e6))
    elif kind == 2:
        s = "{:,}".format(rng.randint(0, 10**15))
    elif kind == 3:
        s = "%e" % rng.uniform(-1e30, 1e30)
    elif kind == 4:
        s = "%d/%d/%d" % (rng.randint(1, 31), rng.randint(1, 12), rng.randint(1900, 2100))
    elif kind == 5:
        s = "%d.%d.%d.%d:%d" % (tuple(rng.randint(0, 255) for _ in range(4)) + (rng.randint(1, 65535),))
    elif kind == 6:
        s = "The answer is %d, not %d." % (rng.randint(0, 999), rng.randint(1000, 99999))
    else:
        s = "".join(rng.choice(["٠١٢٣٤٥٦٧٨٩", "०१२३४५६७८९", "０１２３４５６７８９", "①②③④⑤", "ⅠⅡⅢⅣⅤ", "½¾⅓"])[rng.randint(0, 2)]
                    for _ in range(rng.randint(1, 12)))
    add(s)

# --- whitespace -----------------------------------------------------------------------
SPACES = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u2000", "\u2002", "\u2003", "\u2009", "\u200a",
          "\u3000", "\u202f", "\u205f", "\u1680", "\u2028", "\u2029", "\x0b", "\x0c", "\u200b", "\u180e"]
for sp in SPACES:
    for k in (1, 2, 3, 5, 8, 17):
        add(sp * k)
        add("a" + sp * k + "b")
        add("word" + sp * k)
        add(sp * k + "word")
for _ in range(250):
    s = ""
    for _ in range(rng.randint(1, 8)):
        s += "".join(rng.choice(SPACES) for _ in range(rng.randint(0, 6)))
        s += rng.choice(["x", "hello", "123", "!!", "你好", "é", ".", "(", "'s", "", "🙂", "a b"])
    add(s)
add(" " * 100)
add("\n" * 50)
add("\t \n \r\n \t" * 10)
add("line1\nline2\r\nline3\rline4\n\n\nline5")

# --- contractions ---------------------------------------------------------------------
CONTR = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Re", "'rE", "'VE", "'M",
         "'LL", "'Ll", "'D", "'x", "'", "''", "’s", "'ss", "'lll", "'dd"]
for c in CONTR:
    for w in ("it", "IT", "we", "They", "", " ", "123", "你"):
        add(w + c)
        add(w + c + " go")
add("I'm sure you'll see they're right, we've said he'd done it, isn't it? It's John's.")
add("I'M SURE YOU'LL SEE THEY'RE RIGHT, WE'VE SAID HE'D DONE IT, ISN'T IT?")
add("rock 'n' roll, 'quoted', ''double'', don''t, 'tis, y'all, o'clock")

# --- special tokens and near-misses ---------------------------------------------------
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|box_end|>",
           "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
           "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
           "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"]
NEAR = ["<|im_start", "<|im_end|", "< think>", "<think >", "<|endoftext|>x", "x<|endoftext|>",
        "<|im_start|", "|im_start|>", "<im_start>", "<|IM_START|>", "<|im start|>", "<<|im_end|>>",
        "<|im_end|>|>", "<thinking>", "</think", "<think", "think>", "<tool_call", "</tool_call >",
        "<|endoftext|><|endoftext|>", "<|im_end|><|im_start|>", "<|<|im_start|>|>", "<|", "|>", "<||>",
        "< |im_start| >", "<|fim_prefix|", "<|box_start|", "<|im_sep|>", "<|end|>", "<｜im_start｜>"]
for s in SPECIAL + NEAR:
    add(s)
    add("a" + s + "b")
    add(" " + s + " ")
    add("\n" + s + "\n")
    add("hello" + s + "world")
add("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
add("<|im_start|>assistant\n<think>\nLet me think about it.\n</think>\n\nThe answer is 42.<|im_end|>")
add("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
add("<|fim_prefix|>def add(a, b):\n<|fim_suffix|>\n    return c<|fim_middle|>")
for _ in range(150):
    parts = []
    for _ in range(rng.randint(2, 7)):
        r = rng.random()
        if r < 0.3:
            parts.append(rng.choice(SPECIAL))
        elif r < 0.55:
            parts.append(rng.choice(NEAR))
        else:
            parts.append(rng.choice(["user", "\n", " ", "hi there", "你好", "x", "{", "}", "😀", "  \n"]))
    add("".join(parts))

# --- combining marks and non-NFC input ------------------------------------------------
COMB = ["\u0301", "\u0300", "\u0302", "\u0303", "\u0308", "\u030a", "\u0327", "\u0323", "\u0331",
        "\u20d7", "\u0345", "\u05b4", "\u064e", "\u093c", "\u0e31", "\u3099", "\u309a"]
BASES = ["a", "e", "i", "o", "u", "A", "E", "n", "c", "s", "z", "α", "ω", "и", "か", "ハ", "ע", "ب", " ", "1", "."]
for _ in range(200):
    s = ""
    for _ in range(rng.randint(1, 6)):
        s += rng.choice(BASES) + "".join(rng.choice(COMB) for _ in range(rng.randint(0, 3)))
    add(s)
for w in ["café", "naïve", "résumé", "Ångström", "Việt Nam", "ḱṷṓn", "がぎぐげご", "パピプペポ", "한국어", "Ω", "Å", "ﬁ"]:
    add(unicodedata.normalize("NFD", w))
    add(unicodedata.normalize("NFKD", w))
    add("x " + unicodedata.normalize("NFD", w) + " y")
add("\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af")  # conjoining jamo
add("\u212b \u2126 \u212a")  # singletons that NFC maps
add("e\u0301\u0301\u0301 o\u0308\u0304 a\u0328\u0301")
add("\u0958\u0959 \u0f43 \u2adc \U0001d15e")  # composition exclusions

# --- random code points from the whole assigned repertoire ----------------------------
REPERTOIRE = [chr(cp) for cp in range(0x20, 0x30000) if assigned(cp) and cp not in (0x85, 0xFEFF)]
COMMON = " \n\t'sabcdefghijklmnopqrstuvwxyz0123456789.,!?<|>_-"
for _ in range(400):
    add("".join(rng.choice(REPERTOIRE) if rng.random() < 0.5 else rng.choice(COMMON)
                for _ in range(rng.randint(1, 30))))

# --- mixtures -------------------------------------------------------------------------
POOL = list(out)
for _ in range(500):
    k = rng.randint(2, 4)
    pieces = [rng.choice(POOL) for _ in range(k)]
    s = rng.choice(["", " ", "\n", "\t", ""]).join(pieces)
    if len(s) > 400:
        start = rng.randint(0, len(s) - 400)
        s = s[start:start + 400]
        if s and unicodedata.category(s[0]) == "Cs":
            s = s[1:]
    add(s)

# A few long ones, as prompts are.
for _ in range(5):
    add(" ".join(rng.choice(POOL) for _ in range(60)))

seen = set()
for s in out:
    if s in seen:
        continue
    seen.add(s)
    sys.stdout.write(json.dumps(s, ensure_ascii=False) + "\n")
