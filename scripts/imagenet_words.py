"""Write src/rnncap/assets/imagenet_words.json: for each ImageNet-1k class, the everyday words a
caption would use for it (the head noun of the class name, e.g. "coffee mug" -> "mug", plus the
word for its WordNet family, e.g. every dog breed -> "dog"). Classifier guidance keeps the words
a model's vocabulary has.

Usage: python scripts/imagenet_words.py   (needs torchvision, for the class names; no download)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torchvision.models import ResNet50_Weights

# WordNet families as ranges of ImageNet-1k class indices (inclusive) -> the caption word.
FAMILIES = [
    ((0, 6), "fish"),
    ((7, 24), "bird"),
    ((30, 32), "frog"),
    ((33, 37), "turtle"),
    ((38, 48), "lizard"),
    ((52, 68), "snake"),
    ((72, 77), "spider"),
    ((80, 100), "bird"),
    ((118, 121), "crab"),
    ((127, 146), "bird"),
    ((151, 268), "dog"),
    ((269, 272), "wolf"),
    ((277, 280), "fox"),
    ((281, 285), "cat"),
    ((294, 297), "bear"),
    ((300, 311), "insect"),
    ((321, 326), "butterfly"),
    ((330, 332), "rabbit"),
    ((339, 339), "horse"),
    ((341, 341), "pig"),
    ((345, 347), "cow"),
    ((348, 349), "sheep"),
    ((365, 384), "monkey"),
    ((385, 386), "elephant"),
    ((387, 388), "panda"),
    ((403, 403), "boat"),
    ((444, 444), "bicycle"),
    ((671, 671), "bicycle"),
    ((472, 472), "boat"),
    ((484, 484), "boat"),
    ((510, 510), "ship"),
    ((554, 554), "boat"),
    ((576, 576), "boat"),
    ((625, 625), "boat"),
    ((628, 628), "ship"),
    ((724, 724), "ship"),
    ((780, 780), "boat"),
    ((814, 814), "boat"),
    ((833, 833), "boat"),
    ((871, 871), "boat"),
    ((914, 914), "boat"),
    ((407, 407), "car"),
    ((436, 436), "car"),
    ((468, 468), "car"),
    ((511, 511), "car"),
    ((609, 609), "car"),
    ((627, 627), "car"),
    ((656, 656), "car"),
    ((661, 661), "car"),
    ((717, 717), "truck"),
    ((751, 751), "car"),
    ((817, 817), "car"),
    ((864, 864), "truck"),
    ((867, 867), "truck"),
    ((569, 569), "truck"),
    ((555, 555), "truck"),
    ((779, 779), "bus"),
    ((874, 874), "bus"),
    ((654, 654), "bus"),
    ((466, 466), "train"),
    ((547, 547), "train"),
    ((565, 565), "train"),
    ((820, 820), "train"),
    ((829, 829), "train"),
    ((404, 404), "plane"),
    ((895, 895), "plane"),
    ((908, 908), "plane"),
    ((812, 812), "rocket"),
    ((657, 657), "rocket"),
    ((670, 670), "motorcycle"),
    ((665, 665), "motorcycle"),
    ((967, 967), "coffee"),
    ((968, 968), "cup"),
    ((504, 504), "cup"),
    ((923, 923), "plate"),
    ((963, 963), "pizza"),
    ((934, 934), "hot dog"),
    ((933, 933), "burger"),
    ((954, 954), "banana"),
    ((948, 950), "fruit"),
    ((937, 938), "vegetable"),
    ((981, 981), "baseball"),
    ((429, 429), "baseball"),
    ((768, 768), "football"),
    ((805, 805), "soccer ball"),
    ((852, 852), "tennis"),
    ((890, 890), "volleyball"),
    ((430, 430), "basketball"),
    ((795, 795), "skis"),
    ((796, 796), "ski"),
    ((983, 983), "skateboard"),
    ((417, 417), "balloon"),
    ((671, 671), "bike"),
    ((880, 880), "umbrella"),
    ((831, 831), "bed"),
    ((423, 423), "chair"),
    ((559, 559), "chair"),
    ((765, 765), "chair"),
    ((857, 857), "chair"),
    ((532, 532), "table"),
    ((526, 526), "desk"),
    ((851, 851), "tv"),
    ((664, 664), "computer"),
    ((620, 620), "laptop"),
    ((681, 681), "laptop"),
    ((527, 527), "computer"),
    ((782, 782), "computer"),
    ((487, 487), "phone"),
    ((707, 707), "phone"),
    ((920, 920), "traffic light"),
    ((919, 919), "sign"),
    ((733, 733), "pole"),
    ((762, 762), "restaurant"),
    ((859, 859), "toaster"),
    ((651, 651), "microwave"),
    ((760, 760), "refrigerator"),
    ((766, 766), "oven"),
    ((827, 827), "stove"),
    ((550, 550), "coffee"),
    ((849, 849), "kettle"),
    ((861, 861), "toilet"),
    ((435, 435), "bathtub"),
    ((896, 896), "sink"),
    ((999, 999), "toilet"),
    ((453, 453), "bookcase"),
    ((624, 624), "library"),
    ((970, 980), "mountain"),
    ((975, 975), "lake"),
    ((978, 978), "beach"),
    ((973, 973), "coral"),
    ((979, 979), "valley"),
    ((980, 980), "volcano"),
    ((437, 437), "lighthouse"),
    ((483, 483), "castle"),
    ((698, 698), "palace"),
    ((497, 497), "church"),
    ((832, 832), "tower"),
    ((821, 821), "bridge"),
    ((839, 839), "bridge"),
    ((888, 888), "bridge"),
    ((449, 449), "boat"),
    ((693, 693), "boat"),
    ((701, 701), "parachute"),
    ((978, 978), "sand"),
    ((517, 517), "crane"),
    ((867, 867), "truck"),
]
NAME_WORD = re.compile(r"[a-z]+")
STOP = {"a", "an", "the", "of", "and", "or", "for", "in", "on", "s", "t"}


def class_words() -> dict[int, list[str]]:
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]  # shipped with torchvision
    words: dict[int, list[str]] = {}
    for index, name in enumerate(categories):
        own = [w for w in NAME_WORD.findall(name.lower()) if w not in STOP]
        words[index] = own[-1:]  # the head noun: "Egyptian cat" -> "cat"
    for (first, last), word in FAMILIES:
        for index in range(first, last + 1):
            for w in word.split():
                if w not in words[index]:
                    words[index].insert(0, w)
    return words


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "src" / "rnncap" / "assets" / "imagenet_words.json"
    lines = [f'"{i}": {json.dumps(ws)}' for i, ws in class_words().items()]
    out.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {out.name}: {len(lines)} classes")
