"""Preloaded examples, Chinese and English: the product brief's laptop query first."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.demo.products import Format


@dataclass(frozen=True)
class Example:
    name: str  # the button's text
    query: str
    products: str
    format: Format = Format.LINES
    rank_fields: tuple[str, ...] = ()


LAPTOPS = Example(  # the product brief's own example
    name="笔记本 · laptops",
    query="适合程序员的轻薄笔记本，续航长，键盘手感好",
    products="""\
MacBook Air M2，超长续航，极致轻薄
联想拯救者Y9000P，高性能游戏本，RTX4060显卡
ThinkPad X1 Carbon，经典商务本，键盘手感优秀，支持快充
华为MateBook X Pro，3K全面屏，指纹解锁，重量1.3kg
iPad Pro + 妙控键盘，移动办公神器""",
)

GIFTS = Example(
    name="生日礼物 · gifts",
    query="送女友的生日礼物，预算500元内",
    products="""\
得力 A4 复印纸 70g 500张/包，办公打印用纸，¥25
潘多拉 Pandora 心形串珠手链 925银，生日礼盒装，¥489
苹果 AirPods Pro 2 主动降噪蓝牙耳机，¥1799
永生花玫瑰礼盒 + 星空小夜灯，生日告白礼物，附贺卡，¥199
罗技 G502 有线游戏鼠标，RGB 灯效，¥299
迪奥 Dior 烈艳蓝金唇膏 999 经典正红，专柜礼袋，¥350
施华洛世奇 Swarovski 天鹅项链，镀白金色，¥1290
乐高 LEGO 10280 花束 积木拼搭，送女生创意礼物，¥369
小米手环 8 NFC版，运动心率睡眠监测，¥249
香奈儿 可可小姐 淡香水 50ml，¥1100""",
)

SHOES_ZH = Example(
    name="夏季透气运动鞋 · running shoes",
    query="夏季透气运动鞋",
    products="""\
UGG 经典短靴，羊皮毛一体，冬季保暖雪地靴
耐克 Nike Air Zoom Pegasus 41 男子公路跑鞋，网面透气，缓震回弹
回力 经典高帮帆布鞋，百搭休闲，学生板鞋
李宁 超轻21 男子跑步鞋，镂空网布鞋面，夏季轻薄透气
阿迪达斯 adidas Ultraboost Light 跑鞋，Primeknit 针织鞋面
Crocs 卡骆驰 经典洞洞鞋，夏季沙滩凉鞋
安踏 C202 5代 碳板竞速跑鞋，透气网面，马拉松训练
亚瑟士 ASICS GEL-KAYANO 31 稳定支撑跑鞋，GEL缓震
骆驼 加绒保暖登山鞋，防水防滑，冬季户外
361° 飞燃3 跑步鞋，单层网纱鞋面，透气速干""",
)

SHOES_EN = Example(
    name="Breathable running shoes (CSV)",
    query="breathable summer running shoes",
    format=Format.CSV,
    rank_fields=("title", "category"),
    products="""\
title,brand,category,price,upper
Classic Clog,Crocs,Sandals,49.99,Molded foam
Pegasus 41 Road Running Shoes,Nike,Running shoes,139.99,Engineered mesh
Waterproof Leather Chukka Boots,Timberland,Boots,179.00,Full-grain leather
Ultraboost Light Running Shoes,adidas,Running shoes,189.99,Primeknit
Speedgoat 6 GTX Trail Running Shoes,HOKA,Trail running shoes,170.00,Gore-Tex waterproof membrane
Cloudmonster Mesh Running Shoes,On,Running shoes,169.99,Breathable open mesh
Dri-FIT Cushioned Running Socks (3 pairs),Nike,Socks,18.00,Sweat-wicking knit
Fresh Foam X 1080v14 Knit,New Balance,Running shoes,164.99,Hypoknit
Chuck Taylor All Star High Top,Converse,Sneakers,65.00,Canvas""",
)

JACKETS_EN = Example(
    name="Hiking jacket (JSON)",
    query="waterproof hiking jacket for women, lightweight",
    format=Format.JSON,
    rank_fields=("title", "category", "features"),
    products="""\
[
  {"title": "Torrentshell 3L Rain Jacket - Women's", "brand": "Patagonia", "category": "Women's jackets",
   "price": 179, "features": "3-layer waterproof breathable shell, packs into its pocket"},
  {"title": "Nuptse Puffer Jacket", "brand": "The North Face", "category": "Men's jackets",
   "price": 320, "features": "700-fill down, water-repellent finish"},
  {"title": "Beta LT Jacket - Women's", "brand": "Arc'teryx", "category": "Women's jackets",
   "price": 450, "features": "Gore-Tex, 395 g, helmet-compatible hood"},
  {"title": "Fleece Half-Zip Pullover", "brand": "Uniqlo", "category": "Women's tops",
   "price": 39.9, "features": "Soft fleece, not water-resistant"},
  {"title": "Trail Running Vest 10 L", "brand": "Salomon", "category": "Packs",
   "price": 140, "features": "Two soft flasks included"},
  {"title": "Women's Cloud Rain Shell", "brand": "REI Co-op", "category": "Women's jackets",
   "price": 99.95, "features": "2.5-layer waterproof, 280 g, pit zips"}
]""",
)

EXAMPLES: tuple[Example, ...] = (LAPTOPS, GIFTS, SHOES_ZH, SHOES_EN, JACKETS_EN)
