"""Put a file you fetched yourself into the model-zoo cache as the release's file of an ``ssn://`` name.

    python tools/place_checkpoint.py resnet50_ssn_8x32 ~/Downloads/ssn_8x32.pth
    python tools/place_checkpoint.py ade20k_c1_deepsup_r50_d8_sn_8x2 encoder_epoch_20.pth --part encoder
    python tools/place_checkpoint.py resnet50_ssn_8x32 my_resave.pth --skip-checksum

The file is checked against the release's checksum where the catalogue lists one, as a download is. A file that
cannot match it (your own re-save, a mirror's copy, a model retrained from the release's code) is placed with
``--skip-checksum``: then it is used as it is, and every use of the name prints that it was not checked.
Conversions of an earlier copy are removed, so the next use converts this one.
"""
import sys

from ssn_plugins import model_zoo
from ssn_plugins.cli import tool_parser


def main(argv=None):
    parser = tool_parser(__doc__, "place_checkpoint")
    parser.add_argument("name", help="the catalogue name (as in ssn://NAME)")
    parser.add_argument("file", help="the file to place")
    parser.add_argument("--part", default="", help="which file of a model published as several (encoder, decoder)")
    parser.add_argument("--skip-checksum", action="store_true",
                        help="use the file although it does not match the release's checksum")
    args = parser.parse_args(argv)
    try:
        target = model_zoo.place_file(args.name, args.file, args.part, args.skip_checksum)
    except model_zoo.ModelZooError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    note = " (unchecked: --skip-checksum)" if args.skip_checksum else ""
    print(f"placed {args.file} as {target}{note}; ssn://{args.name} uses it from now on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
