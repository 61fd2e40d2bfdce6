"""MedMNIST v2/v3 facts: official file names, MD5 checksums, split sizes, tasks and class names.

Source: the MedMNIST `medmnist/info.py` (v3.0.2: `MD5*`, `n_samples`) and Zenodo record
10.5281/zenodo.10519652. The split sizes are those of v3; the older v2 files of organamnist,
organcmnist, organsmnist, organmnist3d and vesselmnist3d had slightly different counts.
"""

from __future__ import annotations

from dataclasses import dataclass

ZENODO_BASE = "https://zenodo.org/records/10519652/files"
ORGAN_11 = [
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
]


@dataclass(frozen=True)
class MedMNISTInfo:
    flag: str
    task: str  # binary | multiclass | multilabel | ordinal
    classes: tuple[str, ...]
    channels: int
    kind: str  # image | volume
    md5: dict[int, str]  # size -> MD5 of the official npz
    n_samples: dict[str, int]  # split -> official sample count (the same at every size)

    def file_name(self, size: int) -> str:
        return f"{self.flag}.npz" if size == 28 else f"{self.flag}_{size}.npz"

    def url(self, size: int, base: str = ZENODO_BASE) -> str:
        return f"{base.rstrip('/')}/{self.file_name(size)}?download=1"


def _info(flag, task, classes, channels, md5, n_samples, kind="image"):
    return MedMNISTInfo(flag, task, tuple(classes), channels, kind, md5, n_samples)


CATALOG: dict[str, MedMNISTInfo] = {
    i.flag: i
    for i in [
        _info(
            "pathmnist",
            "multiclass",
            [
                "adipose",
                "background",
                "debris",
                "lymphocytes",
                "mucus",
                "smooth muscle",
                "normal colon mucosa",
                "cancer-associated stroma",
                "colorectal adenocarcinoma epithelium",
            ],
            3,
            {
                28: "a8b06965200029087d5bd730944a56c1",
                64: "55aa9c1e0525abe5a6b9d8343a507616",
                128: "ac42d08fb904d92c244187169d1fd1d9",
                224: "2c51a510bcdc9cf8ddb2af93af1eadec",
            },
            {"train": 89996, "val": 10004, "test": 7180},
        ),
        _info(
            "chestmnist",
            "multilabel",
            [
                "atelectasis",
                "cardiomegaly",
                "effusion",
                "infiltration",
                "mass",
                "nodule",
                "pneumonia",
                "pneumothorax",
                "consolidation",
                "edema",
                "emphysema",
                "fibrosis",
                "pleural",
                "hernia",
            ],
            1,
            {
                28: "02c8a6516a18b556561a56cbdd36c4a8",
                64: "9de6cd0b934ebb5b7426cfba5efbae16",
                128: "db107e5590b27930b62dbaf558aebee3",
                224: "45bd33e6f06c3e8cdb481c74a89152aa",
            },
            {"train": 78468, "val": 11219, "test": 22433},
        ),
        _info(
            "dermamnist",
            "multiclass",
            [
                "actinic keratoses and intraepithelial carcinoma",
                "basal cell carcinoma",
                "benign keratosis-like lesions",
                "dermatofibroma",
                "melanoma",
                "melanocytic nevi",
                "vascular lesions",
            ],
            3,
            {
                28: "0744692d530f8e62ec473284d019b0c7",
                64: "b70a2f5635c6199aeaa28c31d7202e1f",
                128: "2defd784463fa5243564e855ed717de1",
                224: "8974907d8e169bef5f5b96bc506ae45d",
            },
            {"train": 7007, "val": 1003, "test": 2005},
        ),
        _info(
            "octmnist",
            "multiclass",
            ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
            1,
            {
                28: "c68d92d5b585d8d81f7112f81e2d0842",
                64: "e229e9440236b774d9f0dfef9d07bdaf",
                128: "0a97e76651ace45c5d943ee3f65b63ae",
                224: "abc493b6d529d5de7569faaef2773ba3",
            },
            {"train": 97477, "val": 10832, "test": 1000},
        ),
        _info(
            "pneumoniamnist",
            "binary",
            ["normal", "pneumonia"],
            1,
            {
                28: "28209eda62fecd6e6a2d98b1501bb15f",
                64: "8f4eceb4ccffa70c672198ea285246c6",
                128: "05b46931834c231683c68f40c47b2971",
                224: "d6a3c71de1b945ea11211b03746c1fe1",
            },
            {"train": 4708, "val": 524, "test": 624},
        ),
        _info(
            "retinamnist",
            "multiclass",
            ["0", "1", "2", "3", "4"],
            3,
            {
                28: "bd4c0672f1bba3e3a89f0e4e876791e4",
                64: "afda852cc34dcda56f86ad2b2457dbcc",
                128: "e48e916a24454daf90583d4e6efb1a18",
                224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
            },
            {"train": 1080, "val": 120, "test": 400},
        ),
        _info(
            "breastmnist",
            "binary",
            ["malignant", "normal, benign"],
            1,
            {
                28: "750601b1f35ba3300ea97c75c52ff8f6",
                64: "742edef2a1fd1524b2efff4bd7ba9364",
                128: "363e4b3f8d712e9b5de15470a2aaadf1",
                224: "b56378a6eefa9fed602bb16d192d4c8b",
            },
            {"train": 546, "val": 78, "test": 156},
        ),
        _info(
            "bloodmnist",
            "multiclass",
            [
                "basophil",
                "eosinophil",
                "erythroblast",
                "immature granulocytes",
                "lymphocyte",
                "monocyte",
                "neutrophil",
                "platelet",
            ],
            3,
            {
                28: "7053d0359d879ad8a5505303e11de1dc",
                64: "2b94928a2ae4916078ca51e05b6b800b",
                128: "adace1e0ed228fccda1f39692059dd4c",
                224: "b718ff6835fcbdb22ba9eacccd7b2601",
            },
            {"train": 11959, "val": 1712, "test": 3421},
        ),
        _info(
            "tissuemnist",
            "multiclass",
            [
                "Collecting Duct, Connecting Tubule",
                "Distal Convoluted Tubule",
                "Glomerular endothelial cells",
                "Interstitial endothelial cells",
                "Leukocytes",
                "Podocytes",
                "Proximal Tubule Segments",
                "Thick Ascending Limb",
            ],
            1,
            {
                28: "ebe78ee8b05294063de985d821c1c34b",
                64: "123ece2eba09d0aa5d698fda57103344",
                128: "61b955355d7425a89687b06cca3ce0c2",
                224: "b077128c4a949f0a4eb01517f9037b9c",
            },
            {"train": 165466, "val": 23640, "test": 47280},
        ),
        _info(
            "organamnist",
            "multiclass",
            ORGAN_11,
            1,
            {
                28: "68e3f8846a6bd62f0c9bf841c0d9eacc",
                64: "2dcccc29b88e6da5a01161ef20cda288",
                128: "eeae80d0a227a8d099027e1b3cfd3b60",
                224: "50747347e05c87dd3aaf92c49f9f3170",
            },
            {"train": 34561, "val": 6491, "test": 17778},
        ),
        _info(
            "organcmnist",
            "multiclass",
            ORGAN_11,
            1,
            {
                28: "b9ceb9546e10131b32923c5bbeaea2b1",
                64: "3ce34a8724ea6f548e6db4744d03b6a9",
                128: "773c1f009daa3fe5d9a2a201b2a7ed94",
                224: "050f5e875dc056f6768abf94ec9995d1",
            },
            {"train": 12975, "val": 2392, "test": 8216},
        ),
        _info(
            "organsmnist",
            "multiclass",
            ORGAN_11,
            1,
            {
                28: "9ab87b696fb54e2a387ebe992d6ed5f1",
                64: "53a6d115339d874c25e309a994ff46d3",
                128: "ded0c5fa01a95dc4978b956f613e9b8e",
                224: "b354719e553fbbb2513d5533f52a4cb1",
            },
            {"train": 13932, "val": 2452, "test": 8827},
        ),
        _info(
            "organmnist3d",
            "multiclass",
            [
                "liver",
                "kidney-right",
                "kidney-left",
                "femur-right",
                "femur-left",
                "bladder",
                "heart",
                "lung-right",
                "lung-left",
                "spleen",
                "pancreas",
            ],
            1,
            {28: "a0c5a1ff56af4f155c46d46fbb45a2fe", 64: "58a2205adf14a9d0a189cb06dc78bf10"},
            {"train": 971, "val": 161, "test": 610},
            kind="volume",
        ),
        _info(
            "nodulemnist3d",
            "binary",
            ["benign", "malignant"],
            1,
            {28: "8755a7e9e05a4d9ce80a24c3e7a256f3", 64: "c47c5b7d457bf6332200d2ea6d64ecd8"},
            {"train": 1158, "val": 165, "test": 310},
            kind="volume",
        ),
        _info(
            "adrenalmnist3d",
            "binary",
            ["normal", "hyperplasia"],
            1,
            {28: "bbd3c5a5576322bc4cdfea780653b1ce", 64: "17721accfe9fb005146a47d33bc54b2f"},
            {"train": 1188, "val": 98, "test": 298},
            kind="volume",
        ),
        _info(
            "fracturemnist3d",
            "multiclass",
            ["buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"],
            1,
            {28: "6aa7b0143a6b42da40027a9dda61302f", 64: "f01d7e6316aedf4210da0da5b7437b42"},
            {"train": 1027, "val": 103, "test": 240},
            kind="volume",
        ),
        _info(
            "vesselmnist3d",
            "binary",
            ["vessel", "aneurysm"],
            1,
            {28: "b41fd4f7e7e2feedddb201585ecafa1b", 64: "6bb274a8846e1097066dcd64e2c4520f"},
            {"train": 1335, "val": 191, "test": 382},
            kind="volume",
        ),
        _info(
            "synapsemnist3d",
            "binary",
            ["inhibitory synapse", "excitatory synapse"],
            1,
            {28: "1235b78a3cd6280881dd7850a78eadb6", 64: "43bd14ebf3af9d3dd072446fedc14d5e"},
            {"train": 1230, "val": 177, "test": 352},
            kind="volume",
        ),
    ]
}
