"""How a telescope sees the sky: beams, correlated noise, orientation and intensity units.

One implementation of each, used by training augmentation, the beam- and noise-matched
library, the mock observations and the reading of real observations:

``beam``
    the Gaussian beam kernel, convolution with it, beam-correlated noise, the beam solid
    angle and the FWHM/sigma constant;
``orientation``
    rotations and flips of images and of their beams, sky position angles in the array
    frame;
``units``
    flux-density units (Jy, mJy, µJy per beam, pixel or sr) and their conversion.

Images are plain (…, H, W) arrays or tensors of linear intensity indexed [row, column],
displayed with the first row at the bottom (``origin="lower"``: north up, east left). A
positive rotation turns the content counter-clockwise on such a display; a beam position
angle is that of the major axis from north (+row) through east (-column), as FITS ``BPA``.
"""
