//! Run ids survive upgrades. Every example's run id (each run of a sweep example too) is pinned
//! here; the values were printed by `cargo test --release --test run_ids -- --nocapture print`
//! on the build before the model-interface refactor (d38e787), so a refactor, or a key added at
//! a default that keeps the old behaviour, must leave them all unchanged.

use std::path::{Path, PathBuf};

use cloudchamber::spec;
use cloudchamber::sweep;

/// `(file, run index within the sweep or 0, id)`.
#[rustfmt::skip]
const PINNED: &[(&str, usize, &str)] = &[
    ("activation-bias.toml", 0, "67b9e595cbdcfa35"),
    ("depth-scale.toml", 0, "bb29ca3835b40cf7"),
    ("depth-scale.toml", 1, "9c3bc68faf4c91d5"),
    ("depth-scale.toml", 2, "fc2828bd08995ecf"),
    ("depth-scale.toml", 3, "4cea624af7201e05"),
    ("depth-scale.toml", 4, "2838e2c9123edaf3"),
    ("depth-scale.toml", 5, "0bb2b3307bd883bc"),
    ("depth-scale.toml", 6, "c2d769a41cfb019f"),
    ("depth-scale.toml", 7, "b56f2bdad6595cae"),
    ("depth-scale.toml", 8, "41e1d4e5b4c2ae1e"),
    ("depth-scale.toml", 9, "85f5f27f49d27e59"),
    ("depth-scale.toml", 10, "90ad517a818230f6"),
    ("depth-scale.toml", 11, "78ce636f11ae9e4a"),
    ("depth-scale.toml", 12, "4efb5a6b37a975a9"),
    ("depth-scale.toml", 13, "2869d21bd180a491"),
    ("depth-scale.toml", 14, "1859dba6b3fc45bf"),
    ("depth-scale.toml", 15, "1540cd74c3b7eebf"),
    ("depth-scale.toml", 16, "786373595fc59275"),
    ("depth-scale.toml", 17, "244658ad316bab40"),
    ("depth-scale.toml", 18, "d29eda2b189f060c"),
    ("depth-scale.toml", 19, "00702f75c6b1c90a"),
    ("depth-scale.toml", 20, "4047a9a3c3b82afd"),
    ("depth-scale.toml", 21, "8695e4c25b0b8c72"),
    ("depth-scale.toml", 22, "db679990eed5feae"),
    ("depth-scale.toml", 23, "e6d26e5db7512b60"),
    ("depth-scale.toml", 24, "fc0ad177623dfb5c"),
    ("depth-scale.toml", 25, "8b1ee73c8c23e5c3"),
    ("depth-scale.toml", 26, "4736fb9bbb28883c"),
    ("depth-scale.toml", 27, "ea82e36fe14d80f1"),
    ("depth-scale.toml", 28, "742fc44ab169817b"),
    ("depth-scale.toml", 29, "540cc0a3709ab2d1"),
    ("depth-scale.toml", 30, "3a7adeb552eab00b"),
    ("depth-scale.toml", 31, "b74789b2ff3e34d8"),
    ("depth-scale.toml", 32, "5b38275bca0cac07"),
    ("depth-scale.toml", 33, "3f2ac20d7e38de16"),
    ("depth-scale.toml", 34, "2e25a258d5309587"),
    ("depth-scale.toml", 35, "f84f4a497e24799f"),
    ("dyt-vs-layernorm-gpt.toml", 0, "3665432bf3334f45"),
    ("dyt-vs-layernorm-gpt.toml", 1, "be0dc5d67813fd15"),
    ("dyt-vs-layernorm.toml", 0, "3d633bf43b1d58ad"),
    ("edge-of-stability.toml", 0, "31ec802a229e8005"),
    ("gpt-markov.toml", 0, "126bc95edf520d3d"),
    ("grokking.toml", 0, "3b515bb40ab268db"),
    ("in-context-linear.toml", 0, "3bf5021322261de8"),
    ("in-context-retrieval.toml", 0, "e83390016b709ae3"),
    ("induction-heads.toml", 0, "c9ff294e63b94542"),
    ("modular-addition.toml", 0, "db4412db5194e9bf"),
    ("multitask-sparse-parity.toml", 0, "fade2e4e72bcc94d"),
    ("mup-coordcheck.toml", 0, "265ef615add98b06"),
    ("mup-transfer.toml", 0, "a9892d3ab308838e"),
    ("mup-transfer.toml", 1, "7f1889ecd677c9a3"),
    ("mup-transfer.toml", 2, "134692ba0cfcc6a9"),
    ("mup-transfer.toml", 3, "67c7a6cbae5df4cd"),
    ("mup-transfer.toml", 4, "8a9fcef45ef748bd"),
    ("mup-transfer.toml", 5, "4f5ffbd1168363b4"),
    ("mup-transfer.toml", 6, "7b3a0173ef5d1c9c"),
    ("mup-transfer.toml", 7, "6a074ef265383811"),
    ("mup-transfer.toml", 8, "302eb288ce0957a2"),
    ("mup-transfer.toml", 9, "140fa1269e1e39bd"),
    ("mup-transfer.toml", 10, "9506697770e3bbd5"),
    ("mup-transfer.toml", 11, "6755e389a5893ee8"),
    ("mup-transfer.toml", 12, "750a5883cb83decc"),
    ("mup-transfer.toml", 13, "6e95b6c7b54e110e"),
    ("mup-transfer.toml", 14, "6a780fd68b3f9435"),
    ("mup-transfer.toml", 15, "b9d51875581af816"),
    ("mup-transfer.toml", 16, "d844622046dbb449"),
    ("mup-transfer.toml", 17, "e5c7f3e3c6a2933f"),
    ("mup-transfer.toml", 18, "db676bb584bbd4ca"),
    ("mup-transfer.toml", 19, "19134005e2369d77"),
    ("mup-transfer.toml", 20, "e59979c775d58c05"),
    ("mup-transfer.toml", 21, "932883cbdf78c4f2"),
    ("mup-transfer.toml", 22, "525b34f82ee3478a"),
    ("mup-transfer.toml", 23, "f6fdc754f8bc8f2a"),
    ("mup-transfer.toml", 24, "fa9847c3e33a6d30"),
    ("mup-transfer.toml", 25, "2124bc9f1466c36c"),
    ("mup-transfer.toml", 26, "b1b595d785b99671"),
    ("mup-transfer.toml", 27, "4543ff431fc80a25"),
    ("mup-transfer.toml", 28, "cbf32b40bb2bb78c"),
    ("mup-transfer.toml", 29, "a2916d1cca4ed0ed"),
    ("mup-transfer.toml", 30, "a10d01a77aa3beb5"),
    ("mup-transfer.toml", 31, "ff29638391a23f8d"),
    ("mup-transfer.toml", 32, "bea7f07996480b02"),
    ("mup-transfer.toml", 33, "ee50537d009694fb"),
    ("mup-transfer.toml", 34, "6e73e70a7d14c9e9"),
    ("mup-transfer.toml", 35, "d46396175b24dc3f"),
    ("mup-transfer.toml", 36, "764012e9cc80fcd3"),
    ("mup-transfer.toml", 37, "c79425ab79a53b5e"),
    ("mup-transfer.toml", 38, "0fda14e70d901b42"),
    ("mup-transfer.toml", 39, "cb9001cdc8ad5422"),
    ("mup-transfer.toml", 40, "85b71977e579c881"),
    ("mup-transfer.toml", 41, "5e4d0da352895c56"),
    ("mup-transfer.toml", 42, "2acfe2131255c36e"),
    ("mup-transfer.toml", 43, "53a35b6df5d0b8f1"),
    ("mup-transfer.toml", 44, "b188fda1c819fdb2"),
    ("mup-transfer.toml", 45, "fba1f5250f80bfbc"),
    ("mup-transfer.toml", 46, "d18f98e51b3dbfac"),
    ("mup-transfer.toml", 47, "e6628ef3bcab0e47"),
    ("mup-transfer.toml", 48, "bcaf5630fa2563db"),
    ("mup-transfer.toml", 49, "5e2c5680eb023f43"),
    ("mup-transfer.toml", 50, "a9b40d565b9d8b00"),
    ("mup-transfer.toml", 51, "2d89bdf271abc3d5"),
    ("mup-transfer.toml", 52, "cbfd47e077d81b49"),
    ("mup-transfer.toml", 53, "9030bb6357b993cf"),
    ("mup-transfer.toml", 54, "a96749d70b6ad46b"),
    ("mup-transfer.toml", 55, "51406bbd897d9244"),
    ("mup-transfer.toml", 56, "a87cd977a2d9d669"),
    ("mup-transfer.toml", 57, "1e28197210bc0961"),
    ("mup-transfer.toml", 58, "7308d1476b8dea3f"),
    ("mup-transfer.toml", 59, "f5a64a280c254ada"),
    ("mup-transfer.toml", 60, "53454901b6ca7ce3"),
    ("mup-transfer.toml", 61, "256caac0ae81615c"),
    ("mup-transfer.toml", 62, "131bc3b3116ee54e"),
    ("mup-transfer.toml", 63, "edb0ce6a8e8922e2"),
    ("mup-transfer.toml", 64, "a5da94b75cf8ac32"),
    ("mup-transfer.toml", 65, "27999d546bc2f64f"),
    ("mup-transfer.toml", 66, "bc4d86a46e7d80ce"),
    ("mup-transfer.toml", 67, "6aa22cd5f75fbcde"),
    ("mup-transfer.toml", 68, "4b83a71625c7816e"),
    ("mup-transfer.toml", 69, "27f746509759ae16"),
    ("mup-transfer.toml", 70, "92f56495199d99d6"),
    ("mup-transfer.toml", 71, "da510277da7608fe"),
    ("mup-transfer.toml", 72, "893e026c66e0ef14"),
    ("mup-transfer.toml", 73, "b2134288d649234a"),
    ("mup-transfer.toml", 74, "53413585200b0221"),
    ("mup-transfer.toml", 75, "cd8bd8ed467d756b"),
    ("mup-transfer.toml", 76, "e03cfe6c43cda773"),
    ("mup-transfer.toml", 77, "fc77dc50b52506d0"),
    ("mup-transfer.toml", 78, "c95601236f913bc1"),
    ("mup-transfer.toml", 79, "25c31ac342d2c0bc"),
    ("mup-transfer.toml", 80, "a7f741db81935241"),
    ("mup-transfer.toml", 81, "563d8377d8258127"),
    ("mup-transfer.toml", 82, "b6e6270bf41e786f"),
    ("mup-transfer.toml", 83, "ac06a7f5d2a59270"),
    ("mup-transfer.toml", 84, "9ba1b3e46ec8ac34"),
    ("mup-transfer.toml", 85, "78a4a232083bba49"),
    ("mup-transfer.toml", 86, "77fa0da9c452b540"),
    ("mup-transfer.toml", 87, "e3722e044bb2c1de"),
    ("mup-transfer.toml", 88, "089e7f839dd597f2"),
    ("mup-transfer.toml", 89, "12f80976622b3817"),
    ("mup-transfer.toml", 90, "032a606d00612c8e"),
    ("mup-transfer.toml", 91, "5ff7da8150f7eb45"),
    ("mup-transfer.toml", 92, "b6317342eb27670d"),
    ("mup-transfer.toml", 93, "04356379f853939d"),
    ("mup-transfer.toml", 94, "90c06eb171c8fc97"),
    ("mup-transfer.toml", 95, "d594fde8a2ac8a76"),
    ("mup-transfer.toml", 96, "1f6902ffb0a8980d"),
    ("mup-transfer.toml", 97, "f6d71861cc4c4418"),
    ("mup-transfer.toml", 98, "5f6a9c021bfc6088"),
    ("mup-transfer.toml", 99, "c2d6d7be676e08de"),
    ("mup-transfer.toml", 100, "25e0d4cc078307f5"),
    ("mup-transfer.toml", 101, "1831e7bbf12fb75c"),
    ("mup-transfer.toml", 102, "731fa79bae9dddc5"),
    ("mup-transfer.toml", 103, "00b584a24f96fac7"),
    ("mup-transfer.toml", 104, "949fd8cb4fad3e92"),
    ("mup-transfer.toml", 105, "6dcae2c4273998f6"),
    ("mup-transfer.toml", 106, "e9ce36ecfb25ef61"),
    ("mup-transfer.toml", 107, "e0fc31eb02d5753d"),
    ("mup-transfer.toml", 108, "b8f70888bcc2f433"),
    ("mup-transfer.toml", 109, "2e01ddd8614b1eeb"),
    ("mup-transfer.toml", 110, "8225933748304d7c"),
    ("mup-transfer.toml", 111, "74cbc810dd91ac58"),
    ("mup-transfer.toml", 112, "7c8debc87ed51946"),
    ("mup-transfer.toml", 113, "21b2da7418f9d29c"),
    ("mup-transfer.toml", 114, "8ea02346ff28bcfe"),
    ("mup-transfer.toml", 115, "46b0638c32a28bc5"),
    ("mup-transfer.toml", 116, "da211658a9322b26"),
    ("mup-transfer.toml", 117, "158188f1bba7f6b2"),
    ("mup-transfer.toml", 118, "2260405ddb2323fb"),
    ("mup-transfer.toml", 119, "215c56b75d63f012"),
    ("mup-transfer.toml", 120, "aa278f5042afbd1b"),
    ("mup-transfer.toml", 121, "b9fb857674f1172e"),
    ("mup-transfer.toml", 122, "160d85cb71dd9573"),
    ("mup-transfer.toml", 123, "fe2a11609fad4517"),
    ("mup-transfer.toml", 124, "addef7895e3837c5"),
    ("mup-transfer.toml", 125, "15b3c1edadbf9aee"),
    ("mup-transfer.toml", 126, "903b4e5de74d89e0"),
    ("mup-transfer.toml", 127, "b75d2ac3982303c2"),
    ("mup-transfer.toml", 128, "f2ac7d60d33f5010"),
    ("mup-transfer.toml", 129, "d437e4215912f94d"),
    ("mup-transfer.toml", 130, "07af661ff09fba28"),
    ("mup-transfer.toml", 131, "5530ad6986f87673"),
    ("mup-transfer.toml", 132, "dbd70ccb3b804396"),
    ("mup-transfer.toml", 133, "03720fb32f671d8a"),
    ("mup-transfer.toml", 134, "bc0569c0867c94fd"),
    ("mup-transfer.toml", 135, "4ba29a1d85db59a5"),
    ("mup-transfer.toml", 136, "e55008a1fc01d2eb"),
    ("mup-transfer.toml", 137, "490cd9df65550d15"),
    ("mup-transfer.toml", 138, "008f2bc2f14b9829"),
    ("mup-transfer.toml", 139, "12ae1529da0464d4"),
    ("mup-transfer.toml", 140, "1e5ad2d1d5ffcc7a"),
    ("mup-transfer.toml", 141, "06c1c60c8b9ecc55"),
    ("mup-transfer.toml", 142, "201d618c0599f946"),
    ("mup-transfer.toml", 143, "6d2b268205bb060a"),
    ("mup-transfer.toml", 144, "6dbd473ce4d2993f"),
    ("mup-transfer.toml", 145, "d3c2a8bec032f674"),
    ("mup-transfer.toml", 146, "f4bfd8bf4a5cb100"),
    ("mup-transfer.toml", 147, "5fafe8c4847b16d4"),
    ("mup-transfer.toml", 148, "dd62a0952f763762"),
    ("mup-transfer.toml", 149, "bd21001e34fca3b7"),
    ("mup-transfer.toml", 150, "4bc0a3780d2559c6"),
    ("mup-transfer.toml", 151, "c6e118c45b357ae1"),
    ("mup-transfer.toml", 152, "9a4efdf509c3e540"),
    ("mup-transfer.toml", 153, "188f049dc6c0533a"),
    ("mup-transfer.toml", 154, "bd7c6405605c91bd"),
    ("mup-transfer.toml", 155, "dadacfb2ca71472f"),
    ("mup-transfer.toml", 156, "6769ee6fb50966ad"),
    ("mup-transfer.toml", 157, "14aa6af555512d14"),
    ("mup-transfer.toml", 158, "3ef5fd8fb1752208"),
    ("mup-transfer.toml", 159, "7d057a9d6e377c08"),
    ("mup-transfer.toml", 160, "75d2e74d2411053a"),
    ("mup-transfer.toml", 161, "003d6a1b5510e7d2"),
    ("mup-transfer.toml", 162, "54ad16e0ca591694"),
    ("mup-transfer.toml", 163, "36a8677b4c49aa69"),
    ("mup-transfer.toml", 164, "e1e185dfe0ff31c6"),
    ("mup-transfer.toml", 165, "277a0acabef45b65"),
    ("mup-transfer.toml", 166, "eef6b78e1fc04528"),
    ("mup-transfer.toml", 167, "d0d675082a5f84d7"),
    ("mup-transfer.toml", 168, "5613cdb2027668ee"),
    ("mup-transfer.toml", 169, "8c7b3996d8cd3a6c"),
    ("mup-transfer.toml", 170, "1e2913430055362a"),
    ("mup-transfer.toml", 171, "98d7fdfa351f93ea"),
    ("mup-transfer.toml", 172, "3ecc0895222c6700"),
    ("mup-transfer.toml", 173, "1c7940fd0481f886"),
    ("mup-transfer.toml", 174, "6f0f416761f4d570"),
    ("mup-transfer.toml", 175, "1718e5e963dee97e"),
    ("mup-transfer.toml", 176, "ea7daee22e0ddfc2"),
    ("mup-transfer.toml", 177, "81a842f92386ac27"),
    ("mup-transfer.toml", 178, "d694d66442a2688c"),
    ("mup-transfer.toml", 179, "24859323a14d8818"),
    ("mup-transfer.toml", 180, "44646b11dec12998"),
    ("mup-transfer.toml", 181, "085eaa6989157e22"),
    ("mup-transfer.toml", 182, "b4a13f796c31bc3d"),
    ("mup-transfer.toml", 183, "b981d6efab8de169"),
    ("mup-transfer.toml", 184, "4c54e40084b612db"),
    ("mup-transfer.toml", 185, "d12ce31c4450829b"),
    ("mup-transfer.toml", 186, "68f3ab65b27c4a65"),
    ("mup-transfer.toml", 187, "d79d6730d467d68b"),
    ("mup-transfer.toml", 188, "d912401b792bf726"),
    ("mup-transfer.toml", 189, "c1402959209af743"),
    ("mup-transfer.toml", 190, "e2845b3421795981"),
    ("mup-transfer.toml", 191, "1d56f72ed6f836ed"),
    ("pfgm-d-sweep.toml", 0, "d9697d8fdf70d993"),
    ("pfgm-d-sweep.toml", 1, "0549b5d78ab6a1e4"),
    ("pfgm-d-sweep.toml", 2, "fd4f8cf8de943107"),
    ("pfgm-d-sweep.toml", 3, "6c31982bfe9ab0e4"),
    ("pfgm-d-sweep.toml", 4, "1818eda2e6510505"),
    ("pfgm-d-sweep.toml", 5, "f4371c3a11fb1c26"),
    ("pfgm-d-sweep.toml", 6, "f95e42115ad26d1a"),
    ("pfgm-d-sweep.toml", 7, "3fc4fdfb2c84373a"),
    ("pfgm-d-sweep.toml", 8, "ac863b013d08e5b7"),
    ("pfgm-d-sweep.toml", 9, "20e4659b08fe7e4a"),
    ("pfgm-d-sweep.toml", 10, "f7b35cf3af55004d"),
    ("pfgm-d-sweep.toml", 11, "054f3879b9d14ea1"),
    ("pfgm-d-sweep.toml", 12, "73fb9e2c8b0c53eb"),
    ("pfgm-d-sweep.toml", 13, "8e66c69665639e29"),
    ("pfgm-d-sweep.toml", 14, "236270551afe289f"),
    ("pfgm-gmm-1000d.toml", 0, "61d62c8c83d3d70c"),
    ("pfgm-ideal.toml", 0, "7635d9c43c803d14"),
    ("pfgm-ideal.toml", 1, "5a9266e0adcb8b51"),
    ("pfgm-ideal.toml", 2, "2ea5b4516e0d81f0"),
    ("pfgm-ideal.toml", 3, "0ee28fb64644399d"),
    ("pfgm-ideal.toml", 4, "22edd55db6edac39"),
    ("pfgm-ideal.toml", 5, "c561c5bb5573494e"),
    ("pfgm-ideal.toml", 6, "b8c2527eecd31727"),
    ("pfgm-ideal.toml", 7, "648550f8f90a6dd0"),
    ("pfgm-ideal.toml", 8, "b69941e0642baf06"),
    ("pfgm-ideal.toml", 9, "d045d7d2431d4639"),
    ("pfgm-ideal.toml", 10, "7484d49c027b7946"),
    ("pfgm-ideal.toml", 11, "910ed4da192869a6"),
    ("pfgm-moons.toml", 0, "aa1d85b9a2807a36"),
    ("pfgm-robustness.toml", 0, "d9697d8fdf70d993"),
    ("pfgm-robustness.toml", 1, "b00e692ac49e6094"),
    ("pfgm-robustness.toml", 2, "c1a9bfe48916fb10"),
    ("pfgm-robustness.toml", 3, "5fb72e1ba75763c8"),
    ("pfgm-robustness.toml", 4, "f95e42115ad26d1a"),
    ("pfgm-robustness.toml", 5, "3f5bb6269c46cc3c"),
    ("pfgm-robustness.toml", 6, "da6b53a10dd994dd"),
    ("pfgm-robustness.toml", 7, "da061f1185ef0e9a"),
    ("pfgm-robustness.toml", 8, "73fb9e2c8b0c53eb"),
    ("pfgm-robustness.toml", 9, "8b1e5086d36eaafb"),
    ("pfgm-robustness.toml", 10, "9f7f5ec979110541"),
    ("pfgm-robustness.toml", 11, "9ff4fdb82e0077c0"),
    ("phase-diagram.toml", 0, "7a33149e55592450"),
    ("phase-diagram.toml", 1, "f6c06ecf5206782b"),
    ("phase-diagram.toml", 2, "9bef71a97e52a215"),
    ("phase-diagram.toml", 3, "d8c1770e23d74949"),
    ("phase-diagram.toml", 4, "7684805d1b670c21"),
    ("phase-diagram.toml", 5, "ae020554da713760"),
    ("phase-diagram.toml", 6, "fed4a91da02c7418"),
    ("phase-diagram.toml", 7, "952e893f9ca527df"),
    ("phase-diagram.toml", 8, "1e26f4f7eb57e77a"),
    ("phase-diagram.toml", 9, "a73f17ff8e8af122"),
    ("phase-diagram.toml", 10, "d9dd0f29524ba90b"),
    ("phase-diagram.toml", 11, "caf1a394c967afc7"),
    ("phase-diagram.toml", 12, "81f59aede98e0fa9"),
    ("phase-diagram.toml", 13, "6af99852886f640c"),
    ("phase-diagram.toml", 14, "1ba8988292474ed3"),
    ("phase-diagram.toml", 15, "086b7850d79a756c"),
    ("phase-diagram.toml", 16, "610da884bc5073e4"),
    ("phase-diagram.toml", 17, "bf4802bf19c760f8"),
    ("phase-diagram.toml", 18, "5fd820148eb7a471"),
    ("phase-diagram.toml", 19, "7d682ee48a838168"),
    ("phase-diagram.toml", 20, "423f1536f72c0cd6"),
    ("phase-diagram.toml", 21, "b76bc853df36dd29"),
    ("phase-diagram.toml", 22, "6af68d506e5987b6"),
    ("phase-diagram.toml", 23, "eb5fb290081ac0c5"),
    ("phase-diagram.toml", 24, "ea3118a7891ab092"),
    ("phase-diagram.toml", 25, "c687107306a80e79"),
    ("phase-diagram.toml", 26, "2445d40974c74acc"),
    ("phase-diagram.toml", 27, "80f0ae636bf0a9a5"),
    ("phase-diagram.toml", 28, "147bf364f131629e"),
    ("phase-diagram.toml", 29, "88fc25365e147b8b"),
    ("phase-diagram.toml", 30, "9abee3ed5c7a2944"),
    ("phase-diagram.toml", 31, "49e4c57c664a3086"),
    ("phase-diagram.toml", 32, "e74fa8b17567c738"),
    ("phase-diagram.toml", 33, "759333de9191fe9d"),
    ("phase-diagram.toml", 34, "4e157123f3759f6a"),
    ("phase-diagram.toml", 35, "cbbc16d40401e7e4"),
    ("phase-diagram.toml", 36, "aabd6942a83ff3c9"),
    ("phase-diagram.toml", 37, "3e94053a7f8a05fa"),
    ("phase-diagram.toml", 38, "e1976cee0d96b283"),
    ("phase-diagram.toml", 39, "5009cd69f86dcbd0"),
    ("phase-diagram.toml", 40, "58b7d5d7d00b0631"),
    ("phase-diagram.toml", 41, "72624d2e31ed0606"),
    ("phase-diagram.toml", 42, "456eb826d5b736f5"),
    ("phase-diagram.toml", 43, "b192ed2f7c5aaddf"),
    ("phase-diagram.toml", 44, "f8c9110ec272c199"),
    ("phase-diagram.toml", 45, "78dac2abb58a14c4"),
    ("phase-diagram.toml", 46, "e66db16a1aae0c9a"),
    ("phase-diagram.toml", 47, "5016d998b84ae3b0"),
    ("phase-diagram.toml", 48, "892482a8b2c5be21"),
    ("phase-diagram.toml", 49, "ce4f1c9be2a05120"),
    ("phase-diagram.toml", 50, "ee6934fac4bd97d2"),
    ("phase-diagram.toml", 51, "554334cbc9f41e6b"),
    ("phase-diagram.toml", 52, "ab342f2761b91a8d"),
    ("phase-diagram.toml", 53, "495b4111e032fc6d"),
    ("phase-diagram.toml", 54, "22471323ac80baa7"),
    ("phase-diagram.toml", 55, "d417c42a951d5a88"),
    ("phase-diagram.toml", 56, "21125fbc01c21aab"),
    ("phase-diagram.toml", 57, "b49b5ad5a249b93f"),
    ("phase-diagram.toml", 58, "c754c03415fda592"),
    ("phase-diagram.toml", 59, "269927a76cda4421"),
    ("quickstart.toml", 0, "b7acb97a558dccb3"),
    ("theory-vs-width.toml", 0, "362d1c437c7c85f7"),
    ("theory-vs-width.toml", 1, "74b9e68fbf0deaa4"),
    ("theory-vs-width.toml", 2, "99e6270e8189755e"),
    ("theory-vs-width.toml", 3, "f9c6160204ef68df"),
    ("theory-vs-width.toml", 4, "8370a4887eddf164"),
    ("theory-vs-width.toml", 5, "e9150c5d41b868c2"),
    ("theory-vs-width.toml", 6, "0ae85676c2c4a86f"),
    ("theory-vs-width.toml", 7, "993c6d424669e726"),
    ("theory-vs-width.toml", 8, "2a8f95ff949617e0"),
    ("theory-vs-width.toml", 9, "cf3d787760d4f41d"),
    ("theory-vs-width.toml", 10, "d2d37278681f0e14"),
    ("theory-vs-width.toml", 11, "38b78104647a35b9"),
    ("theory-vs-width.toml", 12, "7e5242e0c2e6078e"),
    ("theory-vs-width.toml", 13, "05ff345715e1832f"),
    ("theory-vs-width.toml", 14, "4114f04e4c6a9672"),
    ("theory-vs-width.toml", 15, "fca700a0fd581914"),
    ("theory-vs-width.toml", 16, "d70c806465da8eb6"),
    ("theory-vs-width.toml", 17, "7aacecfd5986b970"),
    ("theory-vs-width.toml", 18, "a88c928acba0a864"),
    ("theory-vs-width.toml", 19, "3e3b5ae02f1c5446"),
    ("theory-vs-width.toml", 20, "850f736520715f45"),
    ("theory-vs-width.toml", 21, "de4cc44e2aa5c0ca"),
    ("theory-vs-width.toml", 22, "78ffe710f362290c"),
    ("theory-vs-width.toml", 23, "04a9dd9d83247539"),
    ("theory-vs-width.toml", 24, "bd613f969d50c4ad"),
    ("theory-vs-width.toml", 25, "0d9b349e0c87c5e5"),
    ("theory-vs-width.toml", 26, "f1a48a96db93db24"),
    ("theory-vs-width.toml", 27, "72af7f6f6fa46ea2"),
    ("theory-vs-width.toml", 28, "b5ea65f1be79a81b"),
    ("theory-vs-width.toml", 29, "c69aeaf58d3f9449"),
    ("theory-vs-width.toml", 30, "9995084735dfe301"),
    ("theory-vs-width.toml", 31, "49fc2163efd07d8b"),
    ("width-scaling.toml", 0, "93b5d11ce1e82cb4"),
    ("width-scaling.toml", 1, "b33c20f10d5cb3d8"),
    ("width-scaling.toml", 2, "b9fcd0ac36f09a8e"),
    ("width-scaling.toml", 3, "1c4aef78a776ed6e"),
    ("width-scaling.toml", 4, "a6424a8b8d63ca68"),
    ("width-scaling.toml", 5, "5ad4c3aa8430137d"),
    ("width-scaling.toml", 6, "7a32eeb9ad9425ba"),
    ("width-scaling.toml", 7, "ce19ce9c6031768a"),
    ("width-scaling.toml", 8, "86a4602f19fb821a"),
    ("width-scaling.toml", 9, "0399c44951839ef7"),
    ("width-scaling.toml", 10, "00bbecee6e0c6968"),
    ("width-scaling.toml", 11, "5a4ea2ad46948f7b"),
    ("width-scaling.toml", 12, "a50bc652e89f785a"),
    ("width-scaling.toml", 13, "31255367337da7dc"),
    ("width-scaling.toml", 14, "14ba698efbdda858"),
    ("width-scaling.toml", 15, "9af67432576d2ede"),
    ("width-scaling.toml", 16, "2cd4ddaf788224ad"),
    ("width-scaling.toml", 17, "5798698e33112283"),
    ("width-scaling.toml", 18, "ff200678d0579d8e"),
    ("width-scaling.toml", 19, "aee2f02d0d47ee66"),
    ("width-scaling.toml", 20, "b0b38daab463a62d"),
    ("width-scaling.toml", 21, "779d0ab9887f4484"),
    ("width-scaling.toml", 22, "2108f6a9f0452e9e"),
    ("width-scaling.toml", 23, "fb4431fd97a9f7d1"),
];

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Every example's runs: `(file name, index, id)`.
fn ids() -> Vec<(String, usize, String)> {
    let mut out = Vec::new();
    for path in examples() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().any(|l| l.trim_start().starts_with("[sweep")) {
            let sw = sweep::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            for r in &sw.runs {
                out.push((name.clone(), r.index, r.id.clone()));
            }
        } else {
            let s = spec::load(&path, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            out.push((name, 0, s.spec.run_id()));
        }
    }
    out
}

/// Prints the table above (run with `--nocapture`).
#[test]
fn print() {
    for (f, i, id) in ids() {
        println!("    (\"{f}\", {i}, \"{id}\"),");
    }
}

#[test]
fn every_example_keeps_its_run_id() {
    let got = ids();
    assert_eq!(
        got.len(),
        PINNED.len(),
        "examples were added or removed: update PINNED"
    );
    for ((f, i, id), (pf, pi, pid)) in got.iter().zip(PINNED) {
        assert_eq!((f.as_str(), *i), (*pf, *pi));
        assert_eq!(id, pid, "{f} run {i}: the run id changed");
    }
}

/// A key added later at its default leaves every example's id unchanged; at another value it
/// changes the id. The key is added to the spec's JSON exactly where a new field would appear
/// (the end of its section), and registered as `spec::LATER_KEYS` entries are.
#[test]
fn a_key_added_at_its_default_keeps_every_id() {
    fn default_width_mult() -> serde_json::Value {
        serde_json::json!(1.0)
    }
    fn default_mode() -> serde_json::Value {
        serde_json::json!("standard")
    }
    // The keys registered so far, plus two hypothetical new ones.
    let mut later: Vec<spec::LaterKey> = spec::LATER_KEYS.to_vec();
    later.push(("model.width_mult", default_width_mult));
    later.push(("train.new_mode", default_mode));
    let later = later.as_slice();
    let mut checked = 0;
    for path in examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().any(|l| l.trim_start().starts_with("[sweep")) {
            continue;
        }
        let s = spec::load(&path, &[]).unwrap().spec;
        let id = s.run_id();
        let mut v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            spec::id_of(v.clone(), later),
            id,
            "{path:?}: id_of differs from run_id"
        );
        v["model"]["width_mult"] = serde_json::json!(1.0);
        v["train"]["new_mode"] = serde_json::json!("standard");
        assert_eq!(
            spec::id_of(v.clone(), later),
            id,
            "{path:?}: the defaulted keys changed the id"
        );
        v["model"]["width_mult"] = serde_json::json!(2.0);
        assert_ne!(
            spec::id_of(v.clone(), later),
            id,
            "{path:?}: a non-default value kept the id"
        );
        // Not registered: any new key changes the id (the registry is what keeps ids stable).
        v["model"]["width_mult"] = serde_json::json!(1.0);
        assert_ne!(spec::id_of(v, &[]), id);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} single-run examples");
}
