// The topic browser's only script (shipped in the package): a cover thumbnail next to the pointer over any plot
// point that names a video (data-v), and the title (data-t) beside it. Pages work without it.
(function () {
  "use strict";
  var card = document.getElementById("hover-card");
  if (!card) { return; }
  var image = card.querySelector("img");
  var text = card.querySelector("span");
  document.addEventListener("mouseover", function (event) {
    var target = event.target;
    if (!target || !target.getAttribute || !target.getAttribute("data-v")) { return; }
    var video = target.getAttribute("data-v");
    image.src = "/covers/" + encodeURIComponent(video) + ".png";
    text.textContent = "video " + video + (target.getAttribute("data-t") ? " · " + target.getAttribute("data-t") : "");
    card.hidden = false;
  });
  document.addEventListener("mousemove", function (event) {
    if (card.hidden) { return; }
    card.style.left = (event.clientX + 14) + "px";
    card.style.top = (event.clientY + 14) + "px";
  });
  document.addEventListener("mouseout", function (event) {
    if (event.target && event.target.getAttribute && event.target.getAttribute("data-v")) { card.hidden = true; }
  });
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target && target.tagName === "circle" && target.getAttribute("data-v")) {
      window.location.href = "/videos/" + encodeURIComponent(target.getAttribute("data-v"));
    }
  });
})();
