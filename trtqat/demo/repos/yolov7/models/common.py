"""Building blocks of the scratch YOLOv7-shaped model, written for trtqat's tests.

Class names, constructor arguments and attribute names follow the yolov7 repository so a pickle written
with these classes has the same structure (``model.51.cv1.conv``, ``model.102.rbr_dense.0`` ...) as a
real ``yolov7.pt``. ELAN blocks are not classes: like yolov7.yaml they are runs of top-level Conv layers
joined by a Concat.
"""
import torch
from torch import nn
from utils import autopad


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU. ``fuseforward`` is used once BN is folded away."""

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            self.act = nn.SiLU()
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuseforward(self, x):
        return self.act(self.conv(x))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``d``."""

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class MP(nn.Module):
    """Stride-k max-pool: the pooling half of yolov7's downsampling (MP) blocks."""

    def __init__(self, k=2):
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=k)

    def forward(self, x):
        return self.m(x)


class SPPCSPC(nn.Module):
    """CSP spatial pyramid pooling: parallel 5/9/13 max-pools on one branch, a 1x1 shortcut on the other."""

    def __init__(self, c1, c2, n=1, shortcut=False, g=1, e=0.5, k=(5, 9, 13)):
        super().__init__()
        hidden = int(2 * c2 * e)
        self.cv1 = Conv(c1, hidden, 1, 1)
        self.cv2 = Conv(c1, hidden, 1, 1)
        self.cv3 = Conv(hidden, hidden, 3, 1)
        self.cv4 = Conv(hidden, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=size, stride=1, padding=size // 2) for size in k)
        self.cv5 = Conv(4 * hidden, hidden, 1, 1)
        self.cv6 = Conv(hidden, hidden, 3, 1)
        self.cv7 = Conv(2 * hidden, c2, 1, 1)

    def forward(self, x):
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        y2 = self.cv2(x)
        return self.cv7(torch.cat((y1, y2), dim=1))


class RepConv(nn.Module):
    """RepVGG-style block: 3x3+BN, 1x1+BN and (when shapes allow) an identity BN, summed, then SiLU.

    ``fuse_repvgg_block`` re-parameterises the three branches into one 3x3 conv with bias
    (``rbr_reparam``), which is what a deployed yolov7 runs.
    """

    def __init__(self, c1, c2, k=3, s=1, p=None, g=1, act=True, deploy=False):
        super().__init__()
        self.deploy = deploy
        self.groups = g
        self.in_channels = c1
        self.out_channels = c2
        if act is True:
            self.act = nn.SiLU()
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()
        if deploy:
            self.rbr_reparam = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=True)
            return
        self.rbr_identity = nn.BatchNorm2d(num_features=c1) if c2 == c1 and s == 1 else None
        self.rbr_dense = nn.Sequential(nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False),
                                       nn.BatchNorm2d(num_features=c2))
        self.rbr_1x1 = nn.Sequential(nn.Conv2d(c1, c2, 1, s, autopad(k, p) - k // 2, groups=g, bias=False),
                                     nn.BatchNorm2d(num_features=c2))

    def forward(self, inputs):
        if hasattr(self, "rbr_reparam"):
            return self.act(self.rbr_reparam(inputs))
        out = self.rbr_dense(inputs) + self.rbr_1x1(inputs)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(inputs)
        return self.act(out)

    @staticmethod
    def _fold(kernel, bn):
        """Kernel and bias of ``bn(conv_kernel(x))`` for a bias-free conv."""
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return kernel * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def _equivalent_kernel_bias(self):
        dense_conv = self.rbr_dense[0]
        k_dense, b_dense = self._fold(dense_conv.weight, self.rbr_dense[1])
        kh, kw = dense_conv.kernel_size
        k1, b1 = self._fold(self.rbr_1x1[0].weight, self.rbr_1x1[1])
        # A 1x1 kernel is the centre tap of a kh x kw kernel.
        k1 = nn.functional.pad(k1, [kw // 2, kw // 2, kh // 2, kh // 2])
        kernel, bias = k_dense + k1, b_dense + b1
        if self.rbr_identity is not None:
            # Identity as a kernel: output channel c reads its own input channel (within its group).
            per_group = self.in_channels // self.groups
            ident = torch.zeros_like(k_dense)
            for c in range(self.in_channels):
                ident[c, c % per_group, kh // 2, kw // 2] = 1.0
            k_id, b_id = self._fold(ident, self.rbr_identity)
            kernel, bias = kernel + k_id, bias + b_id
        return kernel, bias

    @torch.no_grad()
    def fuse_repvgg_block(self):
        """Replace the branches with one equivalent conv ``rbr_reparam`` (eval-mode BN statistics)."""
        if self.deploy or hasattr(self, "rbr_reparam"):
            return
        kernel, bias = self._equivalent_kernel_bias()
        dense_conv = self.rbr_dense[0]
        reparam = nn.Conv2d(dense_conv.in_channels, dense_conv.out_channels, dense_conv.kernel_size,
                            dense_conv.stride, dense_conv.padding, dense_conv.dilation, dense_conv.groups,
                            bias=True).to(kernel.device)
        reparam.weight.copy_(kernel)
        reparam.bias.copy_(bias)
        self.rbr_reparam = reparam
        for name in ("rbr_dense", "rbr_1x1", "rbr_identity"):
            if hasattr(self, name):
                delattr(self, name)
        self.deploy = True


class ImplicitA(nn.Module):
    """Learned per-channel offset added to the input (yolov7's implicit knowledge, additive)."""

    def __init__(self, channel, mean=0.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.zeros(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit + x


class ImplicitM(nn.Module):
    """Learned per-channel factor multiplied onto the input (yolov7's implicit knowledge, multiplicative)."""

    def __init__(self, channel, mean=1.0, std=0.02):
        super().__init__()
        self.channel = channel
        self.implicit = nn.Parameter(torch.ones(1, channel, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x):
        return self.implicit * x
